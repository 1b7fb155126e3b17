// The policy page in a real browser: Debian's chromium driven by playwright-core, the
// page served from target/js/page by serve.mjs on 127.0.0.1. Each case drives the page as
// a person would (keyboard, paste, a chosen file), compares what it shows with the real
// `regcred` CLI on the same input, and keeps a screenshot under target/js/screenshots/.
// Every request the browser makes is recorded (and anything not to the page's own server
// is aborted); the last case checks that only the page's own files were fetched and that
// the canary password is in no request and no console message.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { serve } from "../serve.mjs";

function required(variable) {
  const value = process.env[variable];
  if (!value) throw new Error(`${variable} is not set: run these through js/test.sh`);
  return value;
}

const pageDir = required("REGCRED_PAGE_DIR");
const artifacts = required("REGCRED_ARTIFACTS");
const bin = required("REGCRED_BIN");
const examples = required("REGCRED_EXAMPLES");
const CHROMIUM = "/usr/bin/chromium";
const CANARY = "CANARY-pw-5b2e81";
const OWN_FILES = new Set(["/", "/index.html", "/page.css", "/page.js"]);

let server;
let browser;
let context;
let page;
const requests = [];
const consoleLines = [];
const pageErrors = [];

const canarySecret = `apiVersion: v1
kind: Secret
metadata:
  name: quay-robot
  namespace: apps
type: kubernetes.io/regcredentials
stringData:
  serverAddress: quay.io/my-org
  username: my-org+robot
  password: ${CANARY}
`;

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  server = await serve(pageDir);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  context = await browser.newContext({ viewport: { width: 1100, height: 1000 } });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: server.url });
  context.on("request", (request) => {
    requests.push({
      url: request.url(),
      method: request.method(),
      headers: request.headers(),
      body: request.postData() ?? "",
    });
  });
  // Anything not for the page's own server is refused before it leaves the browser.
  await context.route("**/*", (route) =>
    route.request().url().startsWith(server.url) ? route.continue() : route.abort("blockedbyclient"));
  page = await context.newPage();
  page.on("console", (message) => consoleLines.push(`${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => pageErrors.push(String(error)));
});

after(async () => {
  await browser?.close();
  await server?.close();
});

async function open(hash = "") {
  await page.goto(`${server.url}${hash}`);
  await page.waitForSelector("body[data-ready=true]");
}

async function screenshot(name) {
  const path = join(artifacts, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot: ${path}`);
}

/** Waits for the page to finish the check after `action`. */
async function checked(action) {
  const before = await page.evaluate(() => Number(document.body.dataset.checked ?? 0));
  await action();
  await page.waitForFunction((n) => Number(document.body.dataset.checked ?? 0) > n, before);
}

function regcred(args, input) {
  const run = spawnSync(bin, args, { encoding: "utf8", input, cwd: examples });
  if (run.error) throw new Error(`cannot run ${bin}: ${run.error.message}`);
  return run;
}

async function text(selector) {
  return page.locator(selector).innerText();
}

test("the proposal's own example (plain text under data) gets the base64 / stringData hint", async () => {
  await open();
  await page.focus("#example-proposal");
  await checked(() => page.keyboard.press("Enter"));
  const card = page.locator("article.verdict");
  assert.equal(await card.count(), 1);
  assert.equal(await card.getAttribute("data-status"), "invalid");
  const violations = await text("article.verdict table");
  assert.match(violations, /data\[serverAddress\]/);
  assert.match(violations, /FieldValueInvalid/);
  assert.match(violations, /not valid base64/);
  assert.match(violations, /stringData\[serverAddress\]/);
  // Exactly what `regcred validate -o json -` prints for the same text.
  const manifest = await page.inputValue("#manifest");
  const cli = regcred(["validate", "-o", "json", "-"], manifest);
  assert.equal(cli.status, 1, cli.stderr);
  assert.equal(await page.locator("#validate-json").textContent(), cli.stdout.trimEnd());
  await page.click("#validate-json-details summary");
  await screenshot("1-proposal-example");
});

test("a valid Secret shows valid", async () => {
  await open();
  await page.click("#manifest");
  await checked(() => page.keyboard.insertText(canarySecret));
  const card = page.locator("article.verdict");
  assert.equal(await card.getAttribute("data-status"), "valid");
  assert.equal(await card.getAttribute("data-secret"), "apps/quay-robot");
  assert.match(await card.innerText(), /No violations, no warnings/);
  const cli = regcred(["validate", "-o", "json", "-"], canarySecret);
  assert.equal(cli.status, 0, cli.stderr);
  assert.equal(await page.locator("#validate-json").textContent(), cli.stdout.trimEnd());
  await screenshot("2-valid");
});

test("resolve shows the redacted candidate, as `regcred resolve` prints it", async () => {
  // The manifest from the previous case is still there.
  await page.fill("#image", "quay.io/my-org/app:1.0");
  await page.focus("#image");
  await page.keyboard.press("Enter");
  await page.waitForSelector("#candidates table");
  const candidates = await text("#candidates table");
  assert.match(candidates, /apps\/quay-robot/);
  assert.match(candidates, /<redacted>/);
  assert.match(candidates, /https:\/\/quay\.io/);
  const shown = await page.locator("#resolve-json").textContent();
  const cli = regcred(["resolve", "--image", "quay.io/my-org/app:1.0", "--secret", "-"], canarySecret);
  assert.equal(cli.status, 0, cli.stderr);
  assert.equal(shown, cli.stdout.trimEnd());
  assert.ok(!(await page.content()).includes(CANARY), "the password is in the textarea only");
  await page.click("#resolve-json-details summary");
  await screenshot("3-resolve-redacted");

  // Another runtime profile changes the candidate at once.
  await page.selectOption("#runtime", "cri-o");
  await page.waitForFunction(() => document.querySelector("#resolve-json").textContent.includes('"serverAddress": "quay.io"'));
  const crio = regcred(["resolve", "--image", "quay.io/my-org/app:1.0", "--secret", "-", "--runtime-profile", "cri-o"], canarySecret);
  assert.equal(await page.locator("#resolve-json").textContent(), crio.stdout.trimEnd());
});

test("a policy configuration applies, and a bad one gets a message", async () => {
  await page.fill("#config", "allowedRegistries: ['*.corp.example']\n");
  await checked(() => page.keyboard.press("Control+Enter"));
  assert.equal(await page.locator("article.verdict").getAttribute("data-status"), "invalid");
  assert.match(await text("article.verdict table"), /FieldValueForbidden/);
  await page.fill("#config", "maxValueBytes: 0\n");
  await page.keyboard.press("Control+Enter");
  await page.waitForSelector("#validate-message:not([hidden])");
  assert.match(await text("#validate-message"), /invalid_config/);
  await screenshot("4-bad-policy-config");
  await page.fill("#config", "");
  await checked(() => page.keyboard.press("Control+Enter"));
  assert.equal(await page.locator("article.verdict").getAttribute("data-status"), "valid");
});

test("a 4 MiB paste gets a message, and the page keeps working", async () => {
  await open();
  await page.click("#manifest");
  await checked(() => page.keyboard.insertText(canarySecret));
  const big = `${canarySecret}  registryToken: ${"x".repeat(4 * 1024 * 1024)}\n`;
  await page.evaluate((value) => navigator.clipboard.writeText(value), big);
  assert.equal((await page.evaluate(() => navigator.clipboard.readText())).length, big.length, "the clipboard holds 4 MiB");
  await page.keyboard.press("Control+A");
  await page.keyboard.press("Control+V");
  await page.waitForSelector("#validate-message:not([hidden])");
  const message = await text("#validate-message");
  assert.match(message, /The pasted text is 4\.0 MiB; this page reads at most 3\.0 MiB/);
  assert.equal(await page.inputValue("#manifest"), canarySecret, "the manifest is as it was");
  await screenshot("5-4mib-paste");
  await page.click("#example-valid");
  await page.waitForSelector("article.verdict[data-status=valid][data-secret='apps/quay-robot']");
  assert.equal(await page.locator("#validate-message").isHidden(), true);
});

test("a file over the limit gets a message without being read", async () => {
  await open();
  await page.setInputFiles("#file", { name: "huge.yaml", mimeType: "text/yaml", buffer: Buffer.alloc(4 * 1024 * 1024, "a") });
  await page.waitForSelector("#validate-message:not([hidden])");
  assert.match(await text("#validate-message"), /huge\.yaml is 4\.0 MiB; this page reads at most 3\.0 MiB/);
});

test("invalid YAML gets a message without the input, and the page keeps working", async () => {
  await open();
  await page.click("#manifest");
  const broken = `apiVersion: v1\nkind: Secret\nstringData:\n  password: "${CANARY}\n  username: [a, b\n`;
  await page.keyboard.insertText(broken);
  await page.waitForSelector("#validate-message:not([hidden])");
  const message = await text("#validate-message");
  assert.match(message, /Cannot parse the manifest: document 1: .* at line \d+ column \d+/);
  assert.ok(!message.includes(CANARY), message);
  await screenshot("6-invalid-yaml");
  // Not an object, then several documents: each gets its answer.
  await page.fill("#manifest", "- just\n- a list\n");
  await page.keyboard.press("Control+Enter");
  await page.waitForFunction(() => document.querySelector("#validate-message").textContent.includes("not a Kubernetes object"));
  const several = `${canarySecret}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\n---\n${readFileSync(join(examples, "bad/unknown-key.yaml"), "utf8")}`;
  await page.fill("#manifest", several);
  await checked(() => page.keyboard.press("Control+Enter"));
  const statuses = await page.locator("article.verdict").evaluateAll((cards) => cards.map((c) => c.dataset.status));
  assert.deepEqual(statuses, ["valid", "skipped", "invalid"]);
  const cli = regcred(["validate", "-o", "json", "-"], several);
  assert.equal(await page.locator("#validate-json").textContent(), cli.stdout.trimEnd());
});

test("a chosen file is checked under its name", async () => {
  await open();
  const file = join(examples, "regcredentials-data.yaml");
  await checked(() => page.setInputFiles("#file", { name: "regcredentials-data.yaml", mimeType: "text/yaml", buffer: readFileSync(file) }));
  const cli = regcred(["validate", "-o", "json", "regcredentials-data.yaml"]);
  assert.equal(await page.locator("#validate-json").textContent(), cli.stdout.trimEnd());
  assert.match(cli.stdout, /"file": "regcredentials-data.yaml"/);
});

test("usable by keyboard alone", async () => {
  await open();
  let reached = false;
  for (let i = 0; i < 20 && !reached; i += 1) {
    await page.keyboard.press("Tab");
    reached = await page.evaluate(() => document.activeElement?.id === "example-valid");
  }
  assert.ok(reached, "Tab reaches the example button");
  await checked(() => page.keyboard.press("Enter"));
  assert.equal(await page.locator("article.verdict").getAttribute("data-status"), "valid");
  const focus = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.notEqual(focus, "none", "the focused button shows an outline");
});

test("readable at phone width: nothing wider than the screen", async () => {
  await page.setViewportSize({ width: 360, height: 780 });
  await open("#example=proposal");
  await page.waitForSelector("article.verdict[data-status=invalid]");
  await page.fill("#image", "my.custom-registry.com/app:1.0");
  await page.keyboard.press("Enter");
  const width = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  assert.ok(width[0] <= width[1], `page is ${width[0]}px wide in a ${width[1]}px window`);
  await screenshot("7-phone-width");
  await page.setViewportSize({ width: 1100, height: 1000 });
});

test("the Content-Security-Policy refuses requests the page would make", async () => {
  await open();
  const outcome = await page.evaluate(() => fetch("/page.css").then(() => "fetched", () => "refused"));
  assert.equal(outcome, "refused");
});

test("only the page's own files were fetched; the canary is in no request or console message", () => {
  assert.ok(requests.length >= 4, `${requests.length} requests recorded`);
  const origin = new URL(server.url).origin;
  for (const request of requests) {
    const url = new URL(request.url);
    assert.equal(url.origin, origin, `request to another origin: ${request.url}`);
    assert.ok(OWN_FILES.has(url.pathname), `request for something else: ${request.url}`);
    assert.equal(request.method, "GET", request.url);
    assert.ok(!JSON.stringify(request).includes(CANARY), `the canary is in a request: ${request.url}`);
  }
  for (const served of server.requests) {
    assert.ok(OWN_FILES.has(new URL(served.url, origin).pathname), `the server saw ${served.url}`);
  }
  for (const line of consoleLines) assert.ok(!line.includes(CANARY), `the canary is in the console: ${line}`);
  assert.deepEqual(pageErrors, []);
});

// What the package adds around the module, checked against the real `regcred` CLI
// (REGCRED_BIN): `validateDocuments` prints exactly what `regcred validate -o json`
// prints, `redact(resolve(...).candidates)` exactly what `regcred resolve` prints, for
// every example manifest. Plus the browser entry (run in Node with explicit bytes), and
// a canary password that must never come out of a redacted result or an error.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseAllDocuments } from "yaml";
import * as policy from "@regcred/policy";

const require = createRequire(import.meta.url);

function required(variable) {
  const value = process.env[variable];
  if (!value) throw new Error(`${variable} is not set: run these through js/test.sh`);
  return value;
}

const bin = required("REGCRED_BIN");
const examples = required("REGCRED_EXAMPLES");

function regcred(args) {
  const run = spawnSync(bin, args, { encoding: "utf8", cwd: examples });
  if (run.error) throw new Error(`cannot run ${bin}: ${run.error.message}`);
  assert.ok([0, 1].includes(run.status), `regcred ${args.join(" ")} exited ${run.status}: ${run.stderr}`);
  return run;
}

/** Every document of a YAML or JSON file, as the page reads them. */
function documentsOf(path) {
  return parseAllDocuments(readFileSync(join(examples, path), "utf8")).map((doc) => {
    assert.deepEqual(doc.errors, [], `${path} parses`);
    return doc.toJS();
  });
}

function policyConfigOf(path) {
  const header = /^# policy-config: (\S+)$/m.exec(readFileSync(join(examples, path), "utf8"));
  return header ? join(dirname(path), header[1]) : undefined;
}

const manifests = [
  ...readdirSync(examples).filter((f) => f.endsWith(".yaml")),
  ...readdirSync(join(examples, "bad")).filter((f) => f.endsWith(".yaml")).map((f) => `bad/${f}`),
].sort();

test("there are examples to compare", () => {
  assert.ok(manifests.length >= 20, `${manifests.length} examples in ${examples}`);
});

// One CLI run per policy configuration (the CLI takes many files; each run compiles the
// module, which is slow in a debug build on a busy machine).
const groups = new Map();
for (const file of manifests) {
  const config = policyConfigOf(file) ?? "";
  groups.set(config, [...(groups.get(config) ?? []), file]);
}

for (const [configPath, files] of groups) {
  test(`validateDocuments prints what \`regcred validate -o json\` prints: ${files.length} files${configPath ? ` with ${configPath}` : ""}`, () => {
    const args = ["validate", "-o", "json", ...files];
    let config;
    if (configPath) {
      args.push("--policy-config", configPath);
      [config] = documentsOf(configPath);
    }
    const cli = regcred(args);
    const reports = files.flatMap((file) => policy.validateDocuments(documentsOf(file), { file, config }));
    assert.equal(`${JSON.stringify(reports, null, 2)}\n`, cli.stdout);
    assert.equal(cli.status, reports.some((r) => r.valid === false) ? 1 : 0);
    assert.ok(reports.length >= files.length);
  });
}

// Every credential example at once (in imagePullSecrets order), plus an invalid Secret
// that is skipped with a warning.
const secretFiles = [
  ...readdirSync(examples).filter((f) => f.startsWith("regcredentials-") || f.startsWith("docker")).sort(),
  "bad/unknown-key.yaml",
];
const images = ["quay.io/my-org/app:1.0", "quay.io/other/app", "registry.corp.example:5000/team/app",
  "eu.corp.example/team/tools/app", "docker.io/library/busybox"];

for (const runtime of ["containerd", "cri-o", "passthrough"]) {
  for (const image of images) {
    test(`redact(resolve(...)) prints what \`regcred resolve\` prints: ${image} for ${runtime}`, () => {
      const args = ["resolve", "--image", image, ...secretFiles.flatMap((f) => ["--secret", f]), "--runtime-profile", runtime];
      const cli = regcred(args);
      assert.equal(cli.status, 0, cli.stderr);
      const secrets = secretFiles.flatMap((f) => policy.secretsOf(documentsOf(f)));
      const { candidates, warnings } = policy.resolve(image, secrets, runtime);
      assert.equal(`${JSON.stringify(policy.redact(candidates), null, 2)}\n`, cli.stdout);
      const cliWarnings = cli.stderr.split("\n").filter((l) => l.startsWith("warning: "));
      assert.deepEqual(warnings.map((w) => `warning: ${w}`), cliWarnings);
      assert.ok(warnings.length >= 1, "the invalid Secret is skipped with a warning");
    });
  }
}

test("some resolve cases have candidates, with every secret field redacted", () => {
  const secrets = ["regcredentials-stringdata.yaml", "regcredentials-data.yaml", "dockerconfigjson.yaml"]
    .flatMap((f) => policy.secretsOf(documentsOf(f)));
  let shown = 0;
  for (const image of ["quay.io/my-org/app:1.0", "registry.corp.example:5000/team/app", "docker.io/library/busybox"]) {
    const { candidates } = policy.resolve(image, secrets);
    for (const { authConfig } of policy.redact(candidates)) {
      for (const field of ["password", "auth", "identityToken", "registryToken"]) {
        if (field in authConfig) {
          assert.equal(authConfig[field], policy.REDACTED);
          shown += 1;
        }
      }
    }
  }
  assert.ok(shown >= 2, `only ${shown} redacted fields seen`);
});

const CANARY = "CANARY-pw-7c1d9e";

test("the canary password appears in no redacted candidate, report or error", () => {
  const secret = {
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name: "canary", namespace: "apps" },
    type: "kubernetes.io/regcredentials",
    stringData: { serverAddress: "r.example", username: "u", password: CANARY, registryToken: `${CANARY}-token` },
  };
  const resolution = policy.resolve("r.example/app", [secret], "passthrough");
  assert.ok(JSON.stringify(resolution).includes(CANARY), "the unredacted result has it (the test can fail)");
  assert.ok(!JSON.stringify(policy.redact(resolution.candidates)).includes(CANARY));
  const broken = [
    { ...secret, stringData: { ...secret.stringData, password: `${CANARY}\n` } },
    { ...secret, stringData: { ...secret.stringData, username: `${CANARY}:x` } },
    { ...secret, data: { password: CANARY } },
    { ...secret, stringData: { ...secret.stringData, auth: CANARY } },
  ];
  for (const s of broken) {
    const report = policy.validate(s);
    assert.equal(report.valid, false);
    assert.ok(!JSON.stringify(report).includes(CANARY), JSON.stringify(report));
  }
  for (const bad of [{ ...secret, data: CANARY }, { ...secret, stringData: [CANARY] }]) {
    assert.throws(() => policy.validateDocuments([bad]), (error) => {
      assert.equal(error.code, "invalid_manifest");
      assert.equal(error.document, 1);
      assert.ok(!error.message.includes(CANARY), error.message);
      return true;
    });
  }
});

test("validateDocuments: Lists flattened, other kinds skipped, bad documents named", () => {
  const reports = policy.validateDocuments([
    null,
    { kind: "List", items: [{ kind: "ConfigMap", metadata: { name: "c" } }, { kind: "Secret", type: "Opaque", metadata: { name: "o" } }] },
  ], { file: "x.yaml" });
  assert.deepEqual(reports, [
    { file: "x.yaml", secret: "c", skipped: "kind ConfigMap is not a Secret" },
    { file: "x.yaml", secret: "default/o", skipped: "type Opaque carries no registry credentials" },
  ]);
  assert.throws(() => policy.validateDocuments([{ kind: "Secret" }, 42]),
    { code: "invalid_manifest", document: 2, message: "document 2: not a Kubernetes object (a map with kind and metadata)" });
  assert.throws(() => policy.validate({ kind: "Secret", type: "kubernetes.io/regcredentials" }, { maxValueBytes: 0 }),
    { code: "invalid_config" });
  assert.throws(() => policy.resolve("UPPER/case", []), { code: "invalid_image" });
});

test("the browser entry needs init(), then answers like the Node entry", () => {
  // A process of its own: in this one the Node entry has loaded the shared glue already.
  const entry = join(dirname(require.resolve("@regcred/policy/package.json")), "browser.js");
  const secret = documentsOf("regcredentials-stringdata.yaml")[0];
  const script = `
    import { readFileSync } from "node:fs";
    import * as browser from ${JSON.stringify(pathToFileURL(entry).href)};
    let before;
    try { browser.validate({}); before = "no error"; } catch (error) { before = error.code; }
    await browser.init({ module_or_path: readFileSync(new URL("./wasm/regcred_policy_bg.wasm", ${JSON.stringify(pathToFileURL(entry).href)})) });
    console.log(JSON.stringify({ before, report: browser.validate(${JSON.stringify(secret)}) }));
  `;
  const run = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" });
  assert.equal(run.status, 0, run.stderr);
  const { before, report } = JSON.parse(run.stdout);
  assert.equal(before, "not_initialized");
  assert.deepEqual(report, policy.validate(secret));
  assert.equal(report.valid, true);
});

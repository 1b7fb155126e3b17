// The policy page: validates pasted or dropped manifests and resolves an image's
// candidates with @regcred/policy, entirely in the browser. js/build.sh bundles this with
// yaml, the package's browser entry and the module's bytes into one page.js.
import { parseAllDocuments, parse as parseYaml } from "yaml";
import {
  initSync,
  isPolicyError,
  redact,
  resolve,
  secretsOf,
  validateDocuments,
} from "@regcred/policy";
import wasmBytes from "@regcred/policy/wasm/regcred_policy_bg.wasm";
import packageJson from "@regcred/policy/package.json";
import proposalExample from "../../../examples/bad/proposal-plain-text-under-data.yaml";
import validExample from "../../../examples/regcredentials-stringdata.yaml";

/** The largest manifest the page reads: the API server's request limit (3 MiB). */
export const MAX_INPUT_BYTES = 3 * 1024 * 1024;
const DEBOUNCE_MS = 200;

const $ = (id) => document.getElementById(id);

// The examples' test headers (`# expect:` and the like) are for the repository's tests.
function example(text) {
  return text
    .split("\n")
    .filter((line) => !/^# (expect|schema|policy-config):/.test(line))
    .join("\n");
}
const EXAMPLES = {
  proposal: { manifest: example(proposalExample), image: "my.custom-registry.com/app:1.0" },
  valid: { manifest: example(validExample), image: "quay.io/my-org/app:1.0" },
};

function mib(bytes) {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

function byteLength(text) {
  // Cheap upper bound first: a UTF-16 code unit is at most 3 UTF-8 bytes.
  if (text.length * 3 <= MAX_INPUT_BYTES) return text.length;
  return new TextEncoder().encode(text).length;
}

// A parse error's message without the excerpt of the input yaml appends (which may hold
// a password); like the CLI, a message that quotes anything becomes a generic one.
function describeYamlError(error) {
  const first = String(error.message ?? "").split(" at line ")[0].split("\n")[0];
  const safe = first.includes('"') || first.includes("`") || first.includes("'") || first === ""
    ? "not valid YAML or JSON"
    : first;
  const pos = error.linePos?.[0];
  return pos ? `${safe} at line ${pos.line} column ${pos.col}` : safe;
}

/** The documents of a manifest text, or an Error whose message is safe to show. */
function parseManifest(text) {
  const size = byteLength(text);
  if (size > MAX_INPUT_BYTES) {
    return new Error(
      `The manifest is ${mib(size)}; this page reads at most ${mib(MAX_INPUT_BYTES)} (the API server refuses larger requests). Nothing was checked.`,
    );
  }
  const documents = [];
  const parsed = parseAllDocuments(text, { prettyErrors: true, maxAliasCount: 100 });
  const list = Array.isArray(parsed) ? parsed : [];
  for (const [index, doc] of list.entries()) {
    if (doc.errors.length > 0) {
      return new Error(`Cannot parse the manifest: document ${index + 1}: ${describeYamlError(doc.errors[0])}`);
    }
    try {
      documents.push(doc.toJS({ maxAliasCount: 100 }));
    } catch (error) {
      return new Error(`Cannot parse the manifest: document ${index + 1}: ${describeYamlError(error)}`);
    }
  }
  return documents;
}

/** The policy configuration, `undefined` when empty, or an Error. */
function parseConfig(text) {
  if (text.trim() === "") return undefined;
  if (byteLength(text) > MAX_INPUT_BYTES) {
    return new Error(`The policy configuration is larger than ${mib(MAX_INPUT_BYTES)}.`);
  }
  let value;
  try {
    value = parseYaml(text, { prettyErrors: true, maxAliasCount: 100 });
  } catch (error) {
    return new Error(`The policy configuration is not a policy configuration: ${describeYamlError(error)}`);
  }
  if (value === null || value === undefined) return undefined;
  if (typeof value !== "object" || Array.isArray(value)) {
    return new Error("The policy configuration is not a policy configuration: it must be a map (allowedRegistries, maxSecretBytes, maxValueBytes).");
  }
  return value;
}

function errorText(error) {
  if (isPolicyError(error)) return `${error.message} (${error.code})`;
  return error instanceof Error ? error.message : String(error);
}

function show(id, text) {
  const box = $(id);
  box.textContent = text ?? "";
  box.hidden = !text;
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

function table(caption, headers, rows) {
  return el(
    "table",
    {},
    el("caption", {}, caption),
    el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells.map((c, i) =>
      el("td", { "data-label": headers[i] }, el("code", {}, c)))))),
  );
}

function renderReport(report) {
  const status = "skipped" in report ? "skipped" : report.valid ? "valid" : "invalid";
  const card = el("article", { class: `verdict ${status}`, "data-secret": report.secret, "data-status": status });
  card.append(el("h3", {}, el("span", { class: "badge" }, status), " ", el("code", {}, report.secret)));
  if (status === "skipped") {
    card.append(el("p", {}, `Skipped: ${report.skipped}.`));
    return card;
  }
  if (report.violations.length > 0) {
    card.append(table("Violations", ["Field", "Type", "Message"],
      report.violations.map((v) => [v.field, v.type, v.message])));
  }
  if (report.warnings.length > 0) {
    card.append(table("Warnings", ["Field", "Message"], report.warnings.map((w) => [w.field, w.message])));
  }
  if (report.valid && report.warnings.length === 0) card.append(el("p", {}, "No violations, no warnings."));
  return card;
}

const state = { file: "-", documents: null, config: undefined, firstVerdict: true };

function readInputs() {
  const documents = parseManifest($("manifest").value);
  const config = parseConfig($("config").value);
  return { documents, config };
}

function check() {
  const { documents, config } = readInputs();
  const verdicts = $("verdicts");
  const json = $("validate-json");
  verdicts.replaceChildren();
  json.textContent = "";
  show("validate-message", "");
  for (const value of [documents, config]) {
    if (value instanceof Error) {
      show("validate-message", value.message);
      state.documents = null;
      return;
    }
  }
  state.documents = documents;
  state.config = config;
  if ($("manifest").value.trim() === "") {
    verdicts.append(el("p", { class: "hint" }, "Enter a manifest to see its verdict."));
    return;
  }
  let reports;
  try {
    reports = validateDocuments(documents, { file: state.file, config });
  } catch (error) {
    show("validate-message", errorText(error));
    return;
  }
  if (reports.length === 0) {
    verdicts.append(el("p", { class: "hint" }, "The manifest has no objects."));
  }
  for (const report of reports) verdicts.append(renderReport(report));
  json.textContent = JSON.stringify(reports, null, 2);
  if (state.firstVerdict) {
    state.firstVerdict = false;
    performance.mark("regcred-first-verdict");
  }
  document.body.dataset.checked = String(Number(document.body.dataset.checked ?? 0) + 1);
}

function runResolve() {
  const candidatesBox = $("candidates");
  const warnings = $("resolve-warnings");
  candidatesBox.replaceChildren();
  warnings.replaceChildren();
  $("resolve-json").textContent = "";
  show("resolve-message", "");
  const image = $("image").value.trim();
  if (image === "") {
    show("resolve-message", "Enter an image, such as quay.io/my-org/app:1.0.");
    return;
  }
  const { documents, config } = readInputs();
  for (const value of [documents, config]) {
    if (value instanceof Error) {
      show("resolve-message", value.message);
      return;
    }
  }
  let resolution;
  try {
    resolution = resolve(image, secretsOf(documents), $("runtime").value, config);
  } catch (error) {
    show("resolve-message", errorText(error));
    return;
  }
  const candidates = redact(resolution.candidates);
  if (candidates.length === 0) {
    candidatesBox.append(el("p", { class: "hint" }, `No Secret matches ${image}: the pull would be anonymous.`));
  } else {
    candidatesBox.append(table(
      `Candidates for ${image}, in the order they are tried`,
      ["Secret", "Matched", "AuthConfig"],
      candidates.map((c) => [c.secret, c.matched, JSON.stringify(c.authConfig)]),
    ));
  }
  for (const warning of resolution.warnings) warnings.append(el("li", {}, `warning: ${warning}`));
  $("resolve-json").textContent = JSON.stringify(candidates, null, 2);
  document.body.dataset.resolved = String(Number(document.body.dataset.resolved ?? 0) + 1);
}

let timer;
function scheduleCheck() {
  clearTimeout(timer);
  timer = setTimeout(check, DEBOUNCE_MS);
}

function load(name) {
  const chosen = EXAMPLES[name];
  if (!chosen) return;
  state.file = "-";
  $("manifest").value = chosen.manifest;
  $("image").value = chosen.image;
  check();
}

async function readFile(file) {
  if (file.size > MAX_INPUT_BYTES) {
    show("validate-message", `${file.name} is ${mib(file.size)}; this page reads at most ${mib(MAX_INPUT_BYTES)}. Nothing was checked.`);
    return;
  }
  const text = await file.text();
  state.file = file.name;
  $("manifest").value = text;
  check();
}

function start() {
  performance.mark("regcred-script");
  initSync({ module: wasmBytes });
  performance.mark("regcred-module");
  $("version").textContent = packageJson.version;
  $("manifest").addEventListener("input", () => {
    state.file = "-";
    scheduleCheck();
  });
  // A paste over the limit is refused before it reaches the text area: laying out
  // megabytes of text would freeze the page, and nothing would be checked anyway.
  for (const id of ["manifest", "config"]) {
    $(id).addEventListener("paste", (event) => {
      const pasted = event.clipboardData?.getData("text/plain") ?? "";
      const size = byteLength(pasted);
      if (size > MAX_INPUT_BYTES) {
        event.preventDefault();
        show("validate-message", `The pasted text is ${mib(size)}; this page reads at most ${mib(MAX_INPUT_BYTES)} (the API server refuses larger requests). It was not pasted.`);
      }
    });
  }
  $("config").addEventListener("input", scheduleCheck);
  $("check").addEventListener("click", check);
  $("clear").addEventListener("click", () => {
    $("manifest").value = "";
    state.file = "-";
    check();
    $("manifest").focus();
  });
  $("example-proposal").addEventListener("click", () => load("proposal"));
  $("example-valid").addEventListener("click", () => load("valid"));
  $("resolve-form").addEventListener("submit", (event) => {
    event.preventDefault();
    runResolve();
  });
  $("runtime").addEventListener("change", () => {
    if ($("image").value.trim() !== "") runResolve();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      check();
    }
  });
  $("file").addEventListener("change", () => {
    const [file] = $("file").files;
    if (file) readFile(file);
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const [file] = event.dataTransfer?.files ?? [];
    if (file) readFile(file);
  });
  // `#example=proposal` or `#example=valid` loads an example at once (the load-time benchmark).
  const fromHash = () => {
    const match = /^#example=(\w+)$/.exec(location.hash);
    if (match) load(match[1]);
  };
  window.addEventListener("hashchange", fromHash);
  fromHash();
  document.body.dataset.ready = "true";
  performance.mark("regcred-ready");
}

start();

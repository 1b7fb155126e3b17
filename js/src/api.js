// The package's API: the policy module's `evaluate` (policy-wasm/src/js.rs, built with
// `--features js`) behind typed functions, plus what the `regcred` CLI adds around them: reading
// manifests the way `regcred validate -o json` does and redacting candidates the way
// `regcred resolve` does. Every rule runs in the module; nothing here decides validity.
import * as wasm from "./wasm/regcred_policy.js";

/** The text that replaces a password, `auth` or token, as in the CLI. */
export const REDACTED = "<redacted>";

/** Secret types that carry registry credentials: the ones `validate` checks. */
export const CREDENTIAL_SECRET_TYPES = Object.freeze([
  "kubernetes.io/regcredentials",
  "kubernetes.io/dockerconfigjson",
  "kubernetes.io/dockercfg",
]);

const SECRET_FIELDS = ["password", "auth", "identityToken", "registryToken"];

let initialized = false;

/** Called by the entry points once the module is instantiated. */
export function markInitialized() {
  initialized = true;
}

function ready() {
  if (!initialized) {
    const error = new Error(
      "@regcred/policy is not initialized: `await init()` first (browsers and bundlers load the module asynchronously)",
    );
    error.code = "not_initialized";
    throw error;
  }
}

// Every typed function sends its ABI request through `evaluate` and parses the response
// text here: the object keys then come in the module's order, the order the CLI prints
// (the wasm-bindgen typed exports rebuild objects through serde_json::Value, which
// sorts keys alphabetically).
function call(request) {
  ready();
  const response = JSON.parse(wasm.evaluate(JSON.stringify(request)));
  if (response.error) {
    const error = new Error(response.error.message);
    error.code = response.error.code;
    throw error;
  }
  return response;
}

/** Validates a Secret object; returns the validation report. */
export function validate(secret, config) {
  return call({ op: "validate", secret, config: config ?? undefined }).ok;
}

/** The credentials to try for `image` from `secrets`, in imagePullSecrets order. */
export function resolve(image, secrets, runtime, config) {
  if (typeof image !== "string") {
    throw new TypeError(`resolve: image must be a string, not ${typeof image}`);
  }
  const response = call({
    op: "resolve",
    image,
    secrets,
    runtime: runtime ?? undefined,
    config: config ?? undefined,
  });
  return { candidates: response.ok, warnings: response.warnings ?? [] };
}

/** Converts a dockerconfigjson or dockercfg Secret into regcredentials Secrets. */
export function convert(secret) {
  return call({ op: "convert", secret }).ok;
}

/** One ABI request as JSON text; the response as JSON text (errors are not thrown). */
export function evaluate(request) {
  ready();
  return wasm.evaluate(request);
}

/** One ABI request as bytes; the response as bytes (errors are not thrown). */
export function evaluateBytes(request) {
  ready();
  return wasm.evaluateBytes(request);
}

/** True for an error the policy module threw (it has a `code`). */
export function isPolicyError(error) {
  return error instanceof Error && typeof error.code === "string";
}

/**
 * The candidates with passwords, `auth` and tokens replaced by "<redacted>", as
 * `regcred resolve` prints them without `--show-secrets`. Returns new objects.
 */
export function redact(candidates) {
  return candidates.map((candidate) => {
    const authConfig = { ...candidate.authConfig };
    for (const field of SECRET_FIELDS) {
      if (typeof authConfig[field] === "string" && authConfig[field] !== "") {
        authConfig[field] = REDACTED;
      }
    }
    return { ...candidate, authConfig };
  });
}

function manifestError(document, message) {
  const error = new Error(`document ${document}: ${message}`);
  error.code = "invalid_manifest";
  error.document = document;
  return error;
}

function isMap(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function kindOf(object) {
  return typeof object.kind === "string" ? object.kind : "";
}

function nameOf(object) {
  const name = isMap(object.metadata) ? object.metadata.name : undefined;
  return typeof name === "string" ? name : "<unnamed>";
}

function displayName(secret) {
  const metadata = isMap(secret.metadata) ? secret.metadata : {};
  const namespace = typeof metadata.namespace === "string" ? metadata.namespace : "default";
  let name = "<unnamed>";
  if (typeof metadata.name === "string" && metadata.name !== "") name = metadata.name;
  else if (typeof metadata.generateName === "string" && metadata.generateName !== "") {
    name = `${metadata.generateName}*`;
  }
  return `${namespace}/${name}`;
}

// Every object of one document, `kind: List` (and `*List` with items) flattened, as the
// CLI reads them: [{document, object, secret: boolean}].
function collect(value, document, out) {
  if (value === null || value === undefined) return;
  if (!isMap(value)) {
    throw manifestError(document, "not a Kubernetes object (a map with kind and metadata)");
  }
  const kind = kindOf(value);
  if (kind === "List" || (kind.endsWith("List") && "items" in value)) {
    const items = Array.isArray(value.items) ? value.items : [];
    for (const item of items) collect(item, document, out);
    return;
  }
  const secret = kind === "Secret" || (kind === "" && "type" in value);
  out.push({ document, object: value, secret });
}

function objectsOf(documents) {
  if (!Array.isArray(documents)) {
    throw new TypeError("documents must be an array of parsed manifest documents");
  }
  const out = [];
  documents.forEach((value, index) => collect(value, index + 1, out));
  return out;
}

/**
 * The Secrets among parsed manifest documents (one value per YAML or JSON document,
 * `kind: List` flattened), in order: what `regcred resolve --secret FILE` reads.
 */
export function secretsOf(documents) {
  return objectsOf(documents)
    .filter((entry) => entry.secret)
    .map((entry) => entry.object);
}

/**
 * `regcred validate -o json` for parsed manifest documents: one entry per object, the
 * validation report of each credential Secret with `file`, and `{file, secret, skipped}`
 * for everything else.
 */
export function validateDocuments(documents, options = {}) {
  const file = options.file ?? "-";
  const config = options.config;
  return objectsOf(documents).map(({ document, object, secret }) => {
    if (!secret) {
      const kind = kindOf(object) || "<no kind>";
      return { file, secret: nameOf(object), skipped: `kind ${kind} is not a Secret` };
    }
    const type = object.type ?? "Opaque";
    if (typeof type === "string" && !CREDENTIAL_SECRET_TYPES.includes(type)) {
      return {
        file,
        secret: displayName(object),
        skipped: `type ${type} carries no registry credentials`,
      };
    }
    let report;
    try {
      report = validate(object, config);
    } catch (error) {
      if (isPolicyError(error) && error.code === "bad_request") {
        throw manifestError(
          document,
          `Secret ${JSON.stringify(nameOf(object))} does not have the shape of a Secret: ${error.message}`,
        );
      }
      throw error;
    }
    return { file, ...report };
  });
}

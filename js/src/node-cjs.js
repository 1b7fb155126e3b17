// Node.js, CommonJS: the source of node.cjs, which js/build.sh bundles with esbuild (the
// wasm-bindgen glue is an ES module, which `require` cannot load on every Node version).
// It reads the same wasm file as the ES module entry, from the package's directory.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { initSync as initWasmSync } from "./wasm/regcred_policy.js";
import { markInitialized } from "./api.js";

// `__dirname` of the bundle, node.cjs, at the package's root.
initWasmSync({ module: readFileSync(join(__dirname, "wasm", "regcred_policy_bg.wasm")) });
markInitialized();

export {
  CREDENTIAL_SECRET_TYPES,
  REDACTED,
  convert,
  evaluate,
  evaluateBytes,
  isPolicyError,
  redact,
  resolve,
  secretsOf,
  validate,
  validateDocuments,
} from "./api.js";

/** Already done in Node.js; resolves at once. */
export async function init() {}

/** Already done in Node.js. */
export function initSync() {}

// Node.js, ES modules: the module is compiled and instantiated from the file next to the
// glue when this is imported, so the functions can be called at once. `init()` and
// `initSync()` exist so that code written for browsers runs unchanged.
import { readFileSync } from "node:fs";
import { initSync as initWasmSync } from "./wasm/regcred_policy.js";
import { markInitialized } from "./api.js";

initWasmSync({ module: readFileSync(new URL("./wasm/regcred_policy_bg.wasm", import.meta.url)) });
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

// Browsers and bundlers: `await init()` loads regcred_policy_bg.wasm next to the glue
// (bundlers see the `new URL(..., import.meta.url)` and ship it), or pass the module or
// its bytes: `await init({ module_or_path: bytes })`, `initSync({ module: bytes })`.
import loadWasm, { initSync as initWasmSync } from "./wasm/regcred_policy.js";
import { markInitialized } from "./api.js";

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

/** Loads and instantiates the module; resolves once the functions can be called. */
export async function init(input) {
  await loadWasm(input);
  markInitialized();
}

/** Instantiates the module from its bytes or a compiled `WebAssembly.Module`. */
export function initSync(input) {
  initWasmSync(input);
  markInitialized();
}

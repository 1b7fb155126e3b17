// Loads the shared test vectors (tests/vectors/*.json) and normalizes JSON for
// comparison. Used by raw.test.mjs and bindgen.test.mjs.
import { readdirSync, readFileSync } from "node:fs";
import { join, basename } from "node:path";
import { fileURLToPath } from "node:url";

export const vectorsDir =
  process.env.REGCRED_VECTORS ?? fileURLToPath(new URL("../vectors/", import.meta.url));

/** Every vector: {name, description, request (object or undefined), bytes, expected}. */
export function loadVectors(dir = vectorsDir) {
  const files = readdirSync(dir).filter((f) => f.endsWith(".json")).sort();
  if (files.length === 0) throw new Error(`no vectors in ${dir}`);
  return files.map((file) => {
    const vector = JSON.parse(readFileSync(join(dir, file), "utf8"));
    const sources = ["request", "request_text", "request_base64"].filter((k) => k in vector);
    if (sources.length !== 1 || !("response" in vector)) {
      throw new Error(`${file}: needs exactly one of request, request_text, request_base64, and response`);
    }
    let bytes;
    if ("request" in vector) bytes = Buffer.from(JSON.stringify(vector.request), "utf8");
    else if ("request_text" in vector) bytes = Buffer.from(vector.request_text, "utf8");
    else bytes = Buffer.from(vector.request_base64, "base64");
    return {
      name: basename(file, ".json"),
      description: vector.description ?? "",
      request: vector.request,
      bytes: new Uint8Array(bytes),
      expected: vector.response,
    };
  });
}

/** JSON text with object keys sorted at every level: equal values give equal text. */
export function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/** Path of an input the Rust test prepares, or a loud failure naming the fix. */
export function requiredPath(variable) {
  const path = process.env[variable];
  if (!path) {
    throw new Error(
      `${variable} is not set: run these through \`cargo test -p regcred-host --test wasm node\`, which builds the inputs`,
    );
  }
  return path;
}

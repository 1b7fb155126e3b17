// The wasm-bindgen JavaScript package (policy-wasm built with `--features js`): the typed
// functions on plain objects, and `evaluate` for requests they cannot express.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { join } from "node:path";
import { canonical, loadVectors, requiredPath } from "./vectors.mjs";

const require = createRequire(import.meta.url);
const policy = require(join(requiredPath("REGCRED_JS_PKG"), "regcred_policy.js"));

// The fields each typed function takes, and those it needs; other requests go through
// evaluate only.
const requiredFields = {
  validate: ["secret"],
  resolve: ["image", "secrets"],
  convert: ["secret"],
};
const typedFields = {
  validate: ["op", "secret", "config"],
  resolve: ["op", "image", "secrets", "runtime", "config"],
  convert: ["op", "secret"],
};

function typed(request) {
  try {
    switch (request.op) {
      case "validate":
        return { ok: policy.validate(request.secret, request.config) };
      case "resolve": {
        const { candidates, warnings } = policy.resolve(
          request.image, request.secrets, request.runtime, request.config);
        return warnings.length ? { ok: candidates, warnings } : { ok: candidates };
      }
      case "convert":
        return { ok: policy.convert(request.secret) };
    }
  } catch (error) {
    assert.ok(error instanceof Error, "errors are thrown as Error");
    return { error: { code: error.code, message: error.message } };
  }
  throw new Error(`no typed function for ${request.op}`);
}

function canUseTyped(request) {
  if (request === null || typeof request !== "object" || Array.isArray(request)) return false;
  const fields = typedFields[request.op];
  if (!fields) return false;
  const keys = Object.keys(request);
  // Fields must be there and of a type the typed signature takes.
  if (!keys.every((k) => fields.includes(k))) return false;
  if (!requiredFields[request.op].every((k) => k in request)) return false;
  return !(request.op === "resolve" && typeof request.image !== "string");
}

for (const vector of loadVectors()) {
  test(`vector ${vector.name} (evaluateBytes)`, () => {
    const response = JSON.parse(new TextDecoder().decode(policy.evaluateBytes(vector.bytes)));
    assert.equal(canonical(response), canonical(vector.expected), vector.description);
  });
  if (vector.request !== undefined && canUseTyped(vector.request)) {
    test(`vector ${vector.name} (typed ${vector.request.op})`, () => {
      assert.equal(canonical(typed(vector.request)), canonical(vector.expected), vector.description);
    });
  }
}

test("evaluate takes and gives JSON text", () => {
  const response = JSON.parse(policy.evaluate('{"op":"nope"}'));
  assert.equal(response.error.code, "bad_request");
});

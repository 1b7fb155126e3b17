// The shared test vectors (tests/vectors/*.json) through the installed package's API:
// `evaluateBytes` for every vector, and the typed function (`validate`, `resolve`,
// `convert`) for every request that fits one, its result rebuilt into the ABI response.
// Loaded by vectors.test.mjs (the ES module entry) and vectors.test.cjs (CommonJS).
"use strict";
const { readdirSync, readFileSync } = require("node:fs");
const { join, basename } = require("node:path");
const assert = require("node:assert/strict");

function vectorsDir() {
  const dir = process.env.REGCRED_VECTORS;
  if (!dir) throw new Error("REGCRED_VECTORS is not set: run these through js/test.sh");
  return dir;
}

function loadVectors() {
  const dir = vectorsDir();
  const files = readdirSync(dir).filter((f) => f.endsWith(".json")).sort();
  if (files.length === 0) throw new Error(`no vectors in ${dir}`);
  return files.map((file) => {
    const vector = JSON.parse(readFileSync(join(dir, file), "utf8"));
    let bytes;
    if ("request" in vector) bytes = Buffer.from(JSON.stringify(vector.request), "utf8");
    else if ("request_text" in vector) bytes = Buffer.from(vector.request_text, "utf8");
    else if ("request_base64" in vector) bytes = Buffer.from(vector.request_base64, "base64");
    else throw new Error(`${file}: no request`);
    return {
      name: basename(file, ".json"),
      description: vector.description ?? "",
      request: vector.request,
      bytes: new Uint8Array(bytes),
      expected: vector.response,
    };
  });
}

/** JSON text with object keys sorted at every level. */
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

const typedFields = {
  validate: { all: ["op", "secret", "config"], required: ["secret"] },
  resolve: { all: ["op", "image", "secrets", "runtime", "config"], required: ["image", "secrets"] },
  convert: { all: ["op", "secret"], required: ["secret"] },
};

function fitsTyped(request) {
  if (request === null || typeof request !== "object" || Array.isArray(request)) return false;
  const fields = typedFields[request.op];
  if (!fields) return false;
  if (!Object.keys(request).every((k) => fields.all.includes(k))) return false;
  if (!fields.required.every((k) => k in request)) return false;
  return !(request.op === "resolve" && typeof request.image !== "string");
}

function typed(policy, request) {
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
      default:
        throw new Error(`no typed function for ${request.op}`);
    }
  } catch (error) {
    assert.ok(policy.isPolicyError(error), `a thrown error has a code: ${error}`);
    return { error: { code: error.code, message: error.message } };
  }
}

/** Registers one test per vector and way of calling, under `label`. */
function registerVectorTests(test, policy, label) {
  const vectors = loadVectors();
  let typedCount = 0;
  for (const vector of vectors) {
    test(`${label}: vector ${vector.name} (evaluateBytes)`, () => {
      const response = JSON.parse(new TextDecoder().decode(policy.evaluateBytes(vector.bytes)));
      assert.equal(canonical(response), canonical(vector.expected), vector.description);
    });
    if (vector.request !== undefined && typeof vector.request === "object") {
      test(`${label}: vector ${vector.name} (evaluate)`, () => {
        const response = JSON.parse(policy.evaluate(JSON.stringify(vector.request)));
        assert.equal(canonical(response), canonical(vector.expected), vector.description);
      });
    }
    if (vector.request !== undefined && fitsTyped(vector.request)) {
      typedCount += 1;
      test(`${label}: vector ${vector.name} (typed ${vector.request.op})`, () => {
        assert.equal(canonical(typed(policy, vector.request)), canonical(vector.expected), vector.description);
      });
    }
  }
  test(`${label}: the typed functions ran on most vectors`, () => {
    assert.ok(vectors.length >= 20, `only ${vectors.length} vectors`);
    assert.ok(typedCount * 2 >= vectors.length, `only ${typedCount} of ${vectors.length} typed`);
  });
}

module.exports = { canonical, loadVectors, registerVectorTests };

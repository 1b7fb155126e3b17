// The installed package through its CommonJS entry (`require`), as a Node.js user loads it.
"use strict";
const { test } = require("node:test");
const assert = require("node:assert/strict");
const policy = require("@regcred/policy");
const vectors = require("./vectors.cjs");

test("CJS: `require` resolves to the package's CommonJS entry", () => {
  assert.match(require.resolve("@regcred/policy"), /\/node_modules\/@regcred\/policy\/node\.cjs$/);
});

test("CJS: exports the same names as the ES module entry", async () => {
  const esm = await import("@regcred/policy");
  assert.deepEqual(Object.keys(policy).sort(), Object.keys(esm).filter((k) => k !== "default").sort());
});

vectors.registerVectorTests(test, policy, "CJS");

// The installed package through its ES module entry (`import`), as a Node.js user loads it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import * as policy from "@regcred/policy";
import vectors from "./vectors.cjs";

const require = createRequire(import.meta.url);

test("ESM: `import` resolves to the package's ES module entry", () => {
  const resolved = import.meta.resolve("@regcred/policy");
  assert.match(resolved, /\/node_modules\/@regcred\/policy\/node\.mjs$/);
  assert.match(require.resolve("@regcred/policy"), /\/node_modules\/@regcred\/policy\/node\.cjs$/);
});

test("ESM: the version is the workspace's", () => {
  const { version } = require("@regcred/policy/package.json");
  assert.equal(version, process.env.REGCRED_VERSION);
});

test("ESM: init() resolves and the functions work at once", async () => {
  await policy.init();
  policy.initSync();
  assert.equal(typeof policy.validate, "function");
});

vectors.registerVectorTests(test, policy, "ESM");

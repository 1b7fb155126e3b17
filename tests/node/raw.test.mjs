// The raw policy module through plain WebAssembly.instantiate, no glue: what any
// JavaScript host (Node, a browser) does with policy-wasm/ABI.md.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { canonical, loadVectors, requiredPath } from "./vectors.mjs";

const bytes = readFileSync(requiredPath("REGCRED_POLICY_WASM"));
const module = await WebAssembly.compile(bytes);
const { exports } = await WebAssembly.instantiate(module, {});

function evaluate(request) {
  const { memory, regcred_alloc, regcred_evaluate, regcred_dealloc } = exports;
  const ptr = regcred_alloc(request.length);
  assert.notEqual(ptr, 0, "regcred_alloc gave no buffer");
  new Uint8Array(memory.buffer, ptr >>> 0, request.length).set(request);
  const packed = BigInt.asUintN(64, regcred_evaluate(ptr, request.length));
  const out = Number(packed >> 32n);
  const len = Number(packed & 0xffffffffn);
  assert.ok(out + len <= memory.buffer.byteLength, "response out of bounds");
  const text = new TextDecoder("utf-8", { fatal: true }).decode(
    new Uint8Array(memory.buffer, out, len).slice(),
  );
  regcred_dealloc(out, len);
  regcred_dealloc(ptr, request.length);
  return JSON.parse(text);
}

test("the module imports nothing and exports the ABI", () => {
  assert.deepEqual(WebAssembly.Module.imports(module), []);
  const names = WebAssembly.Module.exports(module).map((e) => e.name);
  for (const name of ["memory", "regcred_abi_version", "regcred_alloc", "regcred_dealloc", "regcred_evaluate"]) {
    assert.ok(names.includes(name), `${name} is exported`);
  }
  assert.equal(exports.regcred_abi_version(), 0x10000);
});

test("a request over the limit is too_large, without a trap", () => {
  assert.equal(exports.regcred_alloc(64 * 1024 * 1024), 0);
  const packed = BigInt.asUintN(64, exports.regcred_evaluate(0, 64 * 1024 * 1024));
  const out = Number(packed >> 32n);
  const len = Number(packed & 0xffffffffn);
  const response = JSON.parse(new TextDecoder().decode(new Uint8Array(exports.memory.buffer, out, len)));
  assert.equal(response.error.code, "too_large");
});

test("a buffer outside memory is a bad_request, without a trap", () => {
  const packed = BigInt.asUintN(64, exports.regcred_evaluate(-16, 8));
  const out = Number(packed >> 32n);
  const len = Number(packed & 0xffffffffn);
  const response = JSON.parse(new TextDecoder().decode(new Uint8Array(exports.memory.buffer, out, len)));
  assert.equal(response.error.code, "bad_request");
});

for (const vector of loadVectors()) {
  test(`vector ${vector.name}`, () => {
    assert.equal(canonical(evaluate(vector.bytes)), canonical(vector.expected), vector.description);
  });
}

// Package policy runs the regcred policy module: the rules for Kubernetes Secrets of
// type kubernetes.io/regcredentials (validation, image matching, the CRI AuthConfig
// for each runtime), compiled to WebAssembly and run in wazero, a pure-Go runtime
// without cgo.
//
// The module is the one the regcred Rust build embeds, byte for byte (its sha256 is
// recorded in policy-wasm/module.sha256 and checked by the tests of both languages);
// it imports nothing and answers one JSON request with one JSON response, as described
// in policy-wasm/ABI.md. The same requests give the same responses here as in the Rust
// host (wasmtime), in Node.js and natively: the shared test vectors prove it.
//
// # Loading
//
// [New] compiles the module once and checks it the way the Rust host does: no imports,
// the exports and signatures of the ABI, an initial memory within the memory cap, and
// the ABI major version (asked from a first instance, under the deadline). Compile once
// per process and share the *Policy: it is safe for concurrent use.
//
// # Calls
//
// Every call ([Policy.Evaluate], [Policy.Validate], [Policy.Resolve],
// [Policy.Convert]) runs in a fresh module instance unless [WithInstanceReuse] is
// given, so that nothing one caller's request leaves in the module's memory (such as
// credentials) is seen by the next. A call is bounded in time (the context's deadline
// or [WithTimeout], 50 ms by default, whichever comes first), in memory ([WithMemoryLimit],
// 32 MiB) and in input size ([WithInputLimit], 4 MiB).
//
// # Errors
//
// A module that loops, traps, grows its memory without bound or answers garbage gives
// an [*EvalError] that matches one of the Err* sentinels with [errors.Is] ([ErrTimeout],
// [ErrMemoryLimit], [ErrTrap], [ErrOutOfBounds], [ErrAllocFailed], [ErrInvalidResponse],
// [ErrInputTooLarge]); the instance is dropped and the next call works. A request the
// policy refuses (a malformed image reference, an invalid configuration) is a
// [*RejectedError] from the typed calls, carrying the ABI's error code; [Policy.Evaluate]
// returns such answers as the module wrote them. Loading errors are [*LoadError]s.
//
// # Credentials
//
// Resolve answers carry credentials. Their fields have the type [Sensitive], which
// prints as "[redacted]" with fmt and log/slog; convert with string(v) where the value
// is needed. Error messages never quote a request or a response.
package policy

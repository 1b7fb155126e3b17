;; Imports a host function; policy modules import nothing. -> LoadError::UnexpectedImport
(module
  (import "env" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "regcred_abi_version") (result i32) (i32.const 0x10000))
  (func (export "regcred_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "regcred_dealloc") (param i32 i32))
  (func (export "regcred_evaluate") (param i32 i32) (result i64)
    (call $log (local.get 0) (local.get 1))
    (i64.const 0)))

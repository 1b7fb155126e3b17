;; `regcred_evaluate` returns an i32, not the packed i64.  -> LoadError::ExportType
(module
  (memory (export "memory") 1)
  (func (export "regcred_abi_version") (result i32) (i32.const 0x10000))
  (func (export "regcred_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "regcred_dealloc") (param i32 i32))
  (func (export "regcred_evaluate") (param i32 i32) (result i32) (i32.const 0)))

;; Exports everything but `regcred_evaluate`.        -> LoadError::MissingExport
(module
  (memory (export "memory") 1)
  (func (export "regcred_abi_version") (result i32) (i32.const 0x10000))
  (func (export "regcred_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "regcred_dealloc") (param i32 i32)))

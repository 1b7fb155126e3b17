;; Asks for 64 MiB of memory at instantiation, above the 32 MiB default limit.
;;                                            -> LoadError::InitialMemory
(module
  (memory (export "memory") 1024)
  (func (export "regcred_abi_version") (result i32) (i32.const 0x10000))
  (func (export "regcred_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "regcred_dealloc") (param i32 i32))
  (func (export "regcred_evaluate") (param i32 i32) (result i64) (i64.const 0)))

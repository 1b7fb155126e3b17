;; Never answers its ABI version.              -> LoadError::Probe { Timeout }
(module
  (memory (export "memory") 1)
  (func (export "regcred_abi_version") (result i32) (loop $forever (br $forever)) (i32.const 0))
  (func (export "regcred_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "regcred_dealloc") (param i32 i32))
  (func (export "regcred_evaluate") (param i32 i32) (result i64) (i64.const 0)))

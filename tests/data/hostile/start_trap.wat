;; Traps in its start function, so it never instantiates. -> LoadError::Probe { Trap }
(module
  (memory (export "memory") 1)
  (func $start unreachable)
  (start $start)
  (func (export "regcred_abi_version") (result i32) (i32.const 0x10000))
  (func (export "regcred_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "regcred_dealloc") (param i32 i32))
  (func (export "regcred_evaluate") (param i32 i32) (result i64) (i64.const 0)))

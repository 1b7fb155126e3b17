;; A policy module that misbehaves on request: the request's first byte picks the
;; failure, and any other request gets a valid `{"ok":"fine"}` response. One instance of
;; this module proves that a host survives each failure and serves the next call.
;;
;;   L  loops forever                      -> Timeout
;;   G  grows memory until refused         -> MemoryLimit
;;   T  executes `unreachable`             -> Trap
;;   S  recurses until the stack overflows -> Trap
;;   P  returns a pointer past memory      -> OutOfBounds (response)
;;   N  returns a length past memory       -> OutOfBounds (response)
;;   J  returns text that is not JSON      -> InvalidJson
;;   U  returns bytes that are not UTF-8   -> InvalidUtf8
;;
;; `regcred_alloc` misbehaves by length: 3 bytes -> 0 (AllocFailed), 5 bytes -> an
;; address past memory (OutOfBounds, request).
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 1024) "{\"ok\":\"fine\"}")
  (data (i32.const 2048) "not json")
  (data (i32.const 3072) "\"\ff\fe\"")

  (func (export "regcred_abi_version") (result i32)
    (i32.const 0x10000))

  (func (export "regcred_alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (if (i32.eq (local.get $len) (i32.const 3)) (then (return (i32.const 0))))
    (if (i32.eq (local.get $len) (i32.const 5)) (then (return (i32.const 0x7fff0000))))
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $len)))
    ;; Grow until the heap fits (one page more than needed, at most).
    (block $done
      (loop $grow
        (br_if $done
          (i32.le_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then (return (i32.const 0))))
        (br $grow)))
    (local.get $ptr))

  (func (export "regcred_dealloc") (param i32 i32))

  (func $recurse (param $n i32) (result i32)
    (i32.add (call $recurse (i32.add (local.get $n) (i32.const 1))) (i32.const 1)))

  (func $packed (param $ptr i32) (param $len i32) (result i64)
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
      (i64.extend_i32_u (local.get $len))))

  (func (export "regcred_evaluate") (param $ptr i32) (param $len i32) (result i64)
    (local $op i32)
    (if (i32.eqz (local.get $len)) (then (return (call $packed (i32.const 1024) (i32.const 13)))))
    (local.set $op (i32.load8_u (local.get $ptr)))
    (if (i32.eq (local.get $op) (i32.const 0x4c)) ;; L
      (then (loop $forever (br $forever))))
    (if (i32.eq (local.get $op) (i32.const 0x47)) ;; G
      (then (loop $more (drop (memory.grow (i32.const 16))) (br $more))))
    (if (i32.eq (local.get $op) (i32.const 0x54)) ;; T
      (then unreachable))
    (if (i32.eq (local.get $op) (i32.const 0x53)) ;; S
      (then (drop (call $recurse (i32.const 0)))))
    (if (i32.eq (local.get $op) (i32.const 0x50)) ;; P
      (then (return (call $packed (i32.const 0xfffff000) (i32.const 16)))))
    (if (i32.eq (local.get $op) (i32.const 0x4e)) ;; N
      (then (return (call $packed (i32.const 1024) (i32.const 0x7fffffff)))))
    (if (i32.eq (local.get $op) (i32.const 0x4a)) ;; J
      (then (return (call $packed (i32.const 2048) (i32.const 8)))))
    (if (i32.eq (local.get $op) (i32.const 0x55)) ;; U
      (then (return (call $packed (i32.const 3072) (i32.const 4)))))
    (call $packed (i32.const 1024) (i32.const 13))))

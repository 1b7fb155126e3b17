package policy

import (
	"context"
	"crypto/sha256"
	_ "embed" // the module
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"
)

// Module is the policy module built from this repository (policy-wasm, for
// wasm32-unknown-unknown), exactly the bytes the Rust host embeds.
//
//go:embed regcred_policy.wasm
var Module []byte

// ABIMajor is the ABI major version this package speaks (policy-wasm/ABI.md).
const ABIMajor = 1

// Defaults, as in the Rust host (regcred_host::Limits).
const (
	DefaultTimeout     = 50 * time.Millisecond
	DefaultMemoryLimit = 32 << 20
	DefaultInputLimit  = 4 << 20
)

// ABIVersion is a module's ABI version, from its regcred_abi_version export.
type ABIVersion struct {
	Major, Minor uint16
}

func (v ABIVersion) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// Option configures [New].
type Option func(*options)

type options struct {
	module      []byte
	pin         string
	pinned      bool
	timeout     time.Duration
	memoryLimit uint64
	inputLimit  int
	interpreter bool
	reuse       int
	cache       wazero.CompilationCache
}

// WithModule loads another module than the embedded [Module] (binary WebAssembly).
func WithModule(wasm []byte) Option {
	return func(o *options) { o.module = wasm }
}

// WithSHA256 refuses the module unless its sha256 is hexDigest (64 hex digits, either
// case, optionally prefixed with "sha256:").
func WithSHA256(hexDigest string) Option {
	return func(o *options) { o.pin, o.pinned = hexDigest, true }
}

// WithTimeout bounds every call (default [DefaultTimeout]); a context deadline that
// comes first wins.
func WithTimeout(d time.Duration) Option {
	return func(o *options) { o.timeout = d }
}

// WithMemoryLimit caps each instance's linear memory, in bytes (default
// [DefaultMemoryLimit]); a module whose memory starts above it is refused at load.
func WithMemoryLimit(bytes uint64) Option {
	return func(o *options) { o.memoryLimit = bytes }
}

// WithInputLimit refuses larger requests before the module runs (default
// [DefaultInputLimit]; the module itself refuses above 8 MiB).
func WithInputLimit(bytes int) Option {
	return func(o *options) { o.inputLimit = bytes }
}

// WithInterpreter runs the module in wazero's interpreter instead of its compiler
// (which wazero only offers on amd64 and arm64): no compilation at start, slower calls.
func WithInterpreter() Option {
	return func(o *options) { o.interpreter = true }
}

// WithInstanceReuse keeps up to n instances (n < 1: GOMAXPROCS) warm and reuses them
// while they behave: faster, but a request's data stays in an instance's memory until
// the next call overwrites it. A call that fails drops its instance.
func WithInstanceReuse(n int) Option {
	return func(o *options) {
		if n < 1 {
			n = runtime.GOMAXPROCS(0)
		}
		o.reuse = n
	}
}

// WithCompilationCache shares wazero's compilation cache (for instance one from
// wazero.NewCompilationCacheWithDir): a process that starts often compiles once.
func WithCompilationCache(cache wazero.CompilationCache) Option {
	return func(o *options) { o.cache = cache }
}

// Policy is a compiled, checked policy module. It is safe for concurrent use; share one
// per process.
type Policy struct {
	runtime  wazero.Runtime
	compiled wazero.CompiledModule
	opts     options
	version  ABIVersion
	sha256   [32]byte
	warm     chan *instance
	closed   atomic.Bool
}

// New compiles the module (the embedded [Module] unless [WithModule] is given) and
// checks it: the pin, no imports, the ABI's exports and their signatures, the initial
// memory, and the ABI major version, asked from a first instance.
func New(ctx context.Context, opts ...Option) (*Policy, error) {
	o := options{
		module:      Module,
		timeout:     DefaultTimeout,
		memoryLimit: DefaultMemoryLimit,
		inputLimit:  DefaultInputLimit,
	}
	for _, opt := range opts {
		opt(&o)
	}
	switch {
	case o.timeout <= 0:
		return nil, &LoadError{Kind: ErrOption, Detail: fmt.Sprintf("timeout %v is not positive", o.timeout)}
	case o.memoryLimit < pageSize || o.memoryLimit > 4<<30:
		return nil, &LoadError{Kind: ErrOption, Detail: fmt.Sprintf("memory limit %d is not between 64 KiB and 4 GiB", o.memoryLimit)}
	case o.inputLimit < 0:
		return nil, &LoadError{Kind: ErrOption, Detail: fmt.Sprintf("input limit %d is negative", o.inputLimit)}
	}
	p := &Policy{opts: o, sha256: sha256.Sum256(o.module)}
	if o.pinned {
		if err := checkPin(o.pin, p.sha256); err != nil {
			return nil, err
		}
	}
	if err := preScan(o.module, o.memoryLimit); err != nil {
		return nil, err
	}

	config := wazero.NewRuntimeConfig()
	if o.interpreter {
		config = wazero.NewRuntimeConfigInterpreter()
	}
	// Calls stop at the context's deadline; the memory cap is enforced per instance by
	// the allocator (see limitedMemory), which records why a grow failed.
	config = config.WithCloseOnContextDone(true)
	if o.cache != nil {
		config = config.WithCompilationCache(o.cache)
	}
	p.runtime = wazero.NewRuntimeWithConfig(ctx, config)
	compiled, err := p.runtime.CompileModule(ctx, o.module)
	if err != nil {
		_ = p.runtime.Close(ctx)
		return nil, &LoadError{Kind: ErrCompile, Err: err}
	}
	p.compiled = compiled
	if err := checkShape(compiled); err != nil {
		_ = p.runtime.Close(ctx)
		return nil, err
	}
	version, err := p.probe(ctx)
	if err != nil {
		_ = p.runtime.Close(ctx)
		return nil, &LoadError{Kind: ErrProbe, Err: err}
	}
	if version.Major != ABIMajor {
		_ = p.runtime.Close(ctx)
		return nil, &LoadError{Kind: ErrABIVersion, Detail: fmt.Sprintf("the module speaks %v, this package %d.x", version, ABIMajor)}
	}
	p.version = version
	if o.reuse > 0 {
		p.warm = make(chan *instance, o.reuse)
	}
	return p, nil
}

func checkPin(pin string, actual [32]byte) error {
	pin = strings.TrimPrefix(strings.TrimSpace(pin), "sha256:")
	want, err := hex.DecodeString(pin)
	if err != nil || len(want) != sha256.Size {
		return &LoadError{Kind: ErrInvalidPin, Detail: fmt.Sprintf("%q", pin)}
	}
	if [32]byte(want) != actual {
		return &LoadError{Kind: ErrSHA256Mismatch,
			Detail: fmt.Sprintf("expected %s, the module is %s", strings.ToLower(pin), hex.EncodeToString(actual[:]))}
	}
	return nil
}

// ABIVersion is the module's ABI version.
func (p *Policy) ABIVersion() ABIVersion { return p.version }

// SHA256 is the module's sha256, in hex.
func (p *Policy) SHA256() string { return hex.EncodeToString(p.sha256[:]) }

// Close releases the compiled module and every warm instance. Calls after Close fail
// with [ErrClosed].
func (p *Policy) Close(ctx context.Context) error {
	if p.closed.Swap(true) {
		return nil
	}
	return p.runtime.Close(ctx)
}

// Evaluate sends one ABI request (policy-wasm/ABI.md) and returns the module's
// response, checked to be UTF-8 JSON. An {"error": ...} response is a response, not an
// error: only a failing module or a limit gives an error, an [*EvalError].
func (p *Policy) Evaluate(ctx context.Context, request []byte) ([]byte, error) {
	response, err := p.call(ctx, request)
	if err != nil {
		return nil, err
	}
	if !json.Valid(response) {
		return nil, &EvalError{Kind: ErrInvalidResponse, Detail: "the response is not JSON"}
	}
	return response, nil
}

// call runs one evaluation under the limits and returns the UTF-8 response.
func (p *Policy) call(ctx context.Context, request []byte) ([]byte, error) {
	if p.closed.Load() {
		return nil, &EvalError{Kind: ErrClosed}
	}
	if len(request) > p.opts.inputLimit {
		return nil, &EvalError{Kind: ErrInputTooLarge,
			Detail: fmt.Sprintf("%d bytes against a limit of %d", len(request), p.opts.inputLimit)}
	}
	callCtx, cancel := context.WithTimeout(ctx, p.opts.timeout)
	defer cancel()

	var inst *instance
	if p.warm != nil {
		select {
		case inst = <-p.warm:
		default:
		}
	}
	if inst == nil {
		var err error
		if inst, err = p.instantiate(callCtx); err != nil {
			return nil, p.classify(ctx, err, inst)
		}
	}
	response, err := inst.run(callCtx, request, p.warm != nil)
	if err != nil {
		_ = inst.mod.Close(context.Background())
		return nil, p.classify(ctx, err, inst)
	}
	if p.warm != nil && !p.closed.Load() {
		select {
		case p.warm <- inst:
		default:
			_ = inst.mod.Close(context.Background())
		}
	} else {
		_ = inst.mod.Close(context.Background())
	}
	if !utf8.Valid(response) {
		return nil, &EvalError{Kind: ErrInvalidResponse, Detail: "the response is not UTF-8"}
	}
	return response, nil
}

// instance is one live module instance with its exports.
type instance struct {
	mod      api.Module
	memory   *limitedMemory
	alloc    api.Function
	dealloc  api.Function
	evaluate api.Function
	version  api.Function
	stack    [2]uint64
}

func (p *Policy) instantiate(ctx context.Context) (*instance, error) {
	if p.closed.Load() {
		return nil, &EvalError{Kind: ErrClosed}
	}
	mem := &limitedMemory{limit: p.opts.memoryLimit}
	ctx = experimental.WithMemoryAllocator(ctx, mem)
	// No name: instances do not collide in the runtime's namespace. No start
	// functions besides the module's own start section.
	config := wazero.NewModuleConfig().WithName("").WithStartFunctions()
	mod, err := p.runtime.InstantiateModule(ctx, p.compiled, config)
	if err != nil {
		return &instance{memory: mem}, err
	}
	return &instance{
		mod:      mod,
		memory:   mem,
		alloc:    mod.ExportedFunction(exportAlloc),
		dealloc:  mod.ExportedFunction(exportDealloc),
		evaluate: mod.ExportedFunction(exportEvaluate),
		version:  mod.ExportedFunction(exportABIVersion),
	}, nil
}

// probe instantiates the module and asks its ABI version, under the limits.
func (p *Policy) probe(ctx context.Context) (ABIVersion, error) {
	callCtx, cancel := context.WithTimeout(ctx, p.opts.timeout)
	defer cancel()
	inst, err := p.instantiate(callCtx)
	if err != nil {
		return ABIVersion{}, p.classify(ctx, err, inst)
	}
	defer inst.mod.Close(context.Background())
	stack := inst.stack[:]
	if err := inst.version.CallWithStack(callCtx, stack); err != nil {
		return ABIVersion{}, p.classify(ctx, err, inst)
	}
	packed := uint32(stack[0])
	return ABIVersion{Major: uint16(packed >> 16), Minor: uint16(packed)}, nil
}

// evaluate copies the request in, evaluates, and copies the response out; frees both
// buffers when the instance is kept.
func (inst *instance) run(ctx context.Context, request []byte, free bool) ([]byte, error) {
	stack := inst.stack[:]
	n := uint32(len(request)) // below the input limit, itself far below 2 GiB
	stack[0] = uint64(n)
	if err := inst.alloc.CallWithStack(ctx, stack); err != nil {
		return nil, err
	}
	ptr := uint32(stack[0])
	if ptr == 0 && n > 0 {
		return nil, &EvalError{Kind: ErrAllocFailed, Detail: fmt.Sprintf("%d bytes", n)}
	}
	memory := inst.mod.Memory()
	if !memory.Write(ptr, request) {
		return nil, outOfBounds("request", ptr, n, memory.Size())
	}
	stack[0], stack[1] = uint64(ptr), uint64(n)
	if err := inst.evaluate.CallWithStack(ctx, stack); err != nil {
		return nil, err
	}
	outPtr, outLen := uint32(stack[0]>>32), uint32(stack[0])
	view, ok := memory.Read(outPtr, outLen)
	if !ok {
		return nil, outOfBounds("response", outPtr, outLen, memory.Size())
	}
	response := make([]byte, len(view))
	copy(response, view)
	if free {
		stack[0], stack[1] = uint64(outPtr), uint64(outLen)
		if err := inst.dealloc.CallWithStack(ctx, stack); err != nil {
			return nil, err
		}
		stack[0], stack[1] = uint64(ptr), uint64(n)
		if err := inst.dealloc.CallWithStack(ctx, stack); err != nil {
			return nil, err
		}
	}
	return response, nil
}

func outOfBounds(what string, ptr, n, size uint32) *EvalError {
	return &EvalError{Kind: ErrOutOfBounds,
		Detail: fmt.Sprintf("%s buffer [%#x, +%d) outside the memory of %d bytes", what, ptr, n, size)}
}

// classify turns a failure inside a call into an *EvalError, using what the instance's
// allocator recorded and the caller's context.
func (p *Policy) classify(ctx context.Context, err error, inst *instance) error {
	var typed *EvalError
	if errors.As(err, &typed) {
		return typed
	}
	if inst != nil && inst.memory.exceeded.Load() {
		return &EvalError{Kind: ErrMemoryLimit, Detail: fmt.Sprintf("limit %d bytes", p.opts.memoryLimit), Err: err}
	}
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		switch {
		case exit.ExitCode() == sys.ExitCodeContextCanceled || errors.Is(ctx.Err(), context.Canceled):
			return &EvalError{Kind: ErrCanceled, Err: context.Canceled}
		case exit.ExitCode() == sys.ExitCodeDeadlineExceeded:
			return &EvalError{Kind: ErrTimeout, Detail: p.deadlineDetail(ctx), Err: context.DeadlineExceeded}
		}
		return &EvalError{Kind: ErrTrap, Detail: fmt.Sprintf("the module exited with code %d", exit.ExitCode()), Err: err}
	}
	if p.closed.Load() {
		return &EvalError{Kind: ErrClosed, Err: err}
	}
	// wazero's runtime errors read "wasm error: unreachable\nwasm stack trace: ...".
	reason := err.Error()
	if i := strings.IndexByte(reason, '\n'); i >= 0 {
		reason = reason[:i]
	}
	return &EvalError{Kind: ErrTrap, Detail: reason, Err: err}
}

func (p *Policy) deadlineDetail(ctx context.Context) string {
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) <= 0 {
		return "the context's deadline"
	}
	return fmt.Sprintf("after %v", p.opts.timeout)
}

// limitedMemory backs one instance's linear memory and refuses to grow it above the
// limit, recording that it did.
type limitedMemory struct {
	limit    uint64
	buf      []byte
	exceeded atomic.Bool
}

// Allocate implements experimental.MemoryAllocator: one memory per instance.
func (m *limitedMemory) Allocate(capacity, _ uint64) experimental.LinearMemory {
	m.buf = make([]byte, 0, min(capacity, m.limit))
	return m
}

// Reallocate implements experimental.LinearMemory.
func (m *limitedMemory) Reallocate(size uint64) []byte {
	if size > m.limit {
		// Stop the call here, as wasmtime's limiter does: a guest that loops on a
		// refused grow would otherwise run into the deadline. wazero recovers the
		// panic into the call's error; the instance is dropped.
		m.exceeded.Store(true)
		panic(errMemoryLimit)
	}
	if size <= uint64(cap(m.buf)) {
		// Linear memory only grows: the bytes past len are still zero.
		m.buf = m.buf[:size]
		return m.buf
	}
	grown := make([]byte, size, min(max(size, 2*uint64(cap(m.buf))), m.limit))
	copy(grown, m.buf)
	m.buf = grown
	return m.buf
}

var errMemoryLimit = errors.New("memory limit exceeded")

// Free implements experimental.LinearMemory.
func (m *limitedMemory) Free() { m.buf = nil }

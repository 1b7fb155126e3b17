package policy_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"regcred.dev/policy"
)

// The modules of tests/data/hostile, assembled into testdata/hostile by
// tests/tests/all/module_digest.rs (which fails when they differ from the .wat files).
func hostile(t testing.TB, name string) []byte {
	t.Helper()
	bin, err := os.ReadFile(filepath.Join("testdata", "hostile", name+".wasm"))
	if err != nil {
		t.Fatalf("%v (assembled from tests/data/hostile/%s.wat by tests/tests/all/module_digest.rs)", err, name)
	}
	return bin
}

// hostileTimeout is short, for the endless loops, and long enough that a loaded test
// machine does not stop the other failures before they happen.
const hostileTimeout = 250 * time.Millisecond

func hostileOptions(t testing.TB, name string, extra ...policy.Option) []policy.Option {
	return append([]policy.Option{
		policy.WithModule(hostile(t, name)),
		policy.WithTimeout(hostileTimeout),
		policy.WithMemoryLimit(4 << 20),
		policy.WithInputLimit(1024),
	}, extra...)
}

func loadHostile(t testing.TB, name string, extra ...policy.Option) *policy.Policy {
	t.Helper()
	p, err := policy.New(context.Background(), hostileOptions(t, name, extra...)...)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

func assertServes(t testing.TB, p *policy.Policy) {
	t.Helper()
	response, err := p.Evaluate(context.Background(), []byte("{}"))
	if err != nil {
		t.Fatalf("a good call after a failure: %v", err)
	}
	if string(response) != `{"ok":"fine"}` {
		t.Fatalf("a good call after a failure answered %q", response)
	}
}

// The strategies of the Rust host's hostile tests: fresh and reused instances, in
// both wazero engines.
var strategies = []struct {
	name string
	opts []policy.Option
}{
	{"compiler_fresh", nil},
	{"compiler_reused", []policy.Option{policy.WithInstanceReuse(1)}},
	{"interpreter_fresh", []policy.Option{policy.WithInterpreter()}},
	{"interpreter_reused", []policy.Option{policy.WithInterpreter(), policy.WithInstanceReuse(1)}},
}

func TestMisbehavingCallGivesTypedErrorThenHostServes(t *testing.T) {
	cases := []struct {
		name    string
		request []byte
		kind    error
		detail  string // a substring of EvalError.Detail
	}{
		{"endless_loop", []byte("L"), policy.ErrTimeout, ""},
		{"unbounded_memory", []byte("G"), policy.ErrMemoryLimit, "4194304"},
		{"trap", []byte("T"), policy.ErrTrap, "unreachable"},
		{"stack_overflow", []byte("S"), policy.ErrTrap, "stack overflow"},
		{"response_pointer_out_of_bounds", []byte("P"), policy.ErrOutOfBounds, "response buffer [0xfffff000, +16)"},
		{"response_length_out_of_bounds", []byte("N"), policy.ErrOutOfBounds, "response buffer [0x400, +2147483647)"},
		{"invalid_json", []byte("J"), policy.ErrInvalidResponse, "not JSON"},
		{"invalid_utf8", []byte("U"), policy.ErrInvalidResponse, "not UTF-8"},
		{"alloc_returns_null", []byte("xyz"), policy.ErrAllocFailed, "3 bytes"},
		{"alloc_out_of_bounds", []byte("12345"), policy.ErrOutOfBounds, "request buffer [0x7fff0000, +5)"},
		{"input_too_large", bytes.Repeat([]byte(" "), 1025), policy.ErrInputTooLarge, "1025 bytes against a limit of 1024"},
	}
	for _, s := range strategies {
		t.Run(s.name, func(t *testing.T) {
			p := loadHostile(t, "misbehave", s.opts...)
			assertServes(t, p)
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					for range 2 {
						_, err := p.Evaluate(context.Background(), c.request)
						var evalErr *policy.EvalError
						if !errors.Is(err, c.kind) || !errors.As(err, &evalErr) {
							t.Fatalf("got %v, want %v", err, c.kind)
						}
						if !strings.Contains(evalErr.Detail, c.detail) {
							t.Fatalf("detail %q does not contain %q", evalErr.Detail, c.detail)
						}
						assertServes(t, p)
					}
				})
			}
		})
	}
}

func TestTimeoutHonoursTheDeadline(t *testing.T) {
	p := loadHostile(t, "misbehave", policy.WithTimeout(30*time.Millisecond))
	started := time.Now()
	_, err := p.Evaluate(context.Background(), []byte("L"))
	elapsed := time.Since(started)
	if !errors.Is(err, policy.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	if elapsed < 30*time.Millisecond || elapsed > 2*time.Second {
		t.Fatalf("stopped after %v, the deadline is 30ms", elapsed)
	}

	// The caller's own deadline, shorter than the policy's, wins.
	p = loadHostile(t, "misbehave", policy.WithTimeout(10*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Millisecond)
	defer cancel()
	started = time.Now()
	_, err = p.Evaluate(ctx, []byte("L"))
	if elapsed := time.Since(started); !errors.Is(err, policy.ErrTimeout) || elapsed > 5*time.Second {
		t.Fatalf("got %v after %v", err, elapsed)
	}
	assertServes(t, p)
}

func TestCanceledContextStopsTheCall(t *testing.T) {
	p := loadHostile(t, "misbehave", policy.WithTimeout(10*time.Second))
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		time.Sleep(30 * time.Millisecond)
		cancel()
	}()
	_, err := p.Evaluate(ctx, []byte("L"))
	if !errors.Is(err, policy.ErrCanceled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	assertServes(t, p)
}

func TestBrokenModuleIsRefusedAtLoad(t *testing.T) {
	cases := []struct {
		module string
		kinds  []error // every one must match
		detail string  // a substring of the message
	}{
		{"missing_export", []error{policy.ErrMissingExport}, "regcred_evaluate"},
		{"no_memory", []error{policy.ErrMissingExport}, "memory"},
		{"wrong_signature", []error{policy.ErrExportType}, "regcred_evaluate must be a function (i32, i32) -> i64"},
		{"abi_v2", []error{policy.ErrABIVersion}, "speaks 2.0"},
		{"imports", []error{policy.ErrUnexpectedImport}, `"env" "log"`},
		{"huge_memory", []error{policy.ErrInitialMemory}, "1024 pages (67108864 bytes) against a limit of 4194304 bytes"},
		{"version_loop", []error{policy.ErrProbe, policy.ErrTimeout}, "deadline exceeded"},
		{"start_trap", []error{policy.ErrProbe, policy.ErrTrap}, "unreachable"},
	}
	for _, s := range strategies {
		t.Run(s.name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.module, func(t *testing.T) {
					p, err := policy.New(context.Background(), hostileOptions(t, c.module, s.opts...)...)
					if err == nil {
						_ = p.Close(context.Background())
						t.Fatal("the module loaded")
					}
					var loadErr *policy.LoadError
					if !errors.As(err, &loadErr) {
						t.Fatalf("not a *LoadError: %v", err)
					}
					for _, kind := range c.kinds {
						if !errors.Is(err, kind) {
							t.Fatalf("%v does not match %v", err, kind)
						}
					}
					if !strings.Contains(err.Error(), c.detail) {
						t.Fatalf("%q does not say %q", err, c.detail)
					}
					// The process goes on loading and serving modules.
					assertServes(t, loadHostile(t, "misbehave", s.opts...))
				})
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	misbehave := hostile(t, "misbehave")
	cases := []struct {
		name string
		opts []policy.Option
		kind error
	}{
		{"not_a_module", []policy.Option{policy.WithModule([]byte("\x00asm garbage"))}, policy.ErrCompile},
		{"empty_module_bytes", []policy.Option{policy.WithModule(nil)}, policy.ErrCompile},
		{"pin_mismatch", []policy.Option{policy.WithModule(misbehave), policy.WithSHA256(strings.Repeat("ab", 32))}, policy.ErrSHA256Mismatch},
		{"pin_not_hex", []policy.Option{policy.WithSHA256("not-a-digest")}, policy.ErrInvalidPin},
		{"pin_too_short", []policy.Option{policy.WithSHA256("abcd")}, policy.ErrInvalidPin},
		{"embedded_pinned_to_other", []policy.Option{policy.WithSHA256("sha256:" + strings.Repeat("0", 64))}, policy.ErrSHA256Mismatch},
		{"zero_timeout", []policy.Option{policy.WithTimeout(0)}, policy.ErrOption},
		{"tiny_memory", []policy.Option{policy.WithMemoryLimit(1024)}, policy.ErrOption},
		{"negative_input_limit", []policy.Option{policy.WithInputLimit(-1)}, policy.ErrOption},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := policy.New(context.Background(), c.opts...)
			if err == nil {
				_ = p.Close(context.Background())
				t.Fatal("loaded")
			}
			if !errors.Is(err, c.kind) {
				t.Fatalf("got %v, want %v", err, c.kind)
			}
		})
	}
}

func TestClosedPolicyRefusesCalls(t *testing.T) {
	for _, s := range strategies[:2] {
		t.Run(s.name, func(t *testing.T) {
			p, err := policy.New(context.Background(), hostileOptions(t, "misbehave", s.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			assertServes(t, p)
			if err := p.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if _, err := p.Evaluate(context.Background(), []byte("{}")); !errors.Is(err, policy.ErrClosed) {
				t.Fatalf("got %v", err)
			}
			if err := p.Close(context.Background()); err != nil {
				t.Fatalf("a second Close: %v", err)
			}
		})
	}
}

// Many goroutines share one Policy, good calls mixed with failing ones: every call
// gets its own answer (run with -race in scripts/test).
func TestConcurrentCallsGetTheirOwnAnswers(t *testing.T) {
	for _, s := range strategies[:2] {
		t.Run(s.name, func(t *testing.T) {
			p := loadHostile(t, "misbehave", append(s.opts, policy.WithTimeout(5*time.Second))...)
			var wg sync.WaitGroup
			errs := make(chan error, 64)
			for g := range 8 {
				wg.Go(func() {
					for i := range 25 {
						var err error
						switch (g + i) % 3 {
						case 0:
							var response []byte
							response, err = p.Evaluate(context.Background(), []byte("{}"))
							if err == nil && string(response) != `{"ok":"fine"}` {
								err = errors.New("wrong answer " + string(response))
							}
						case 1:
							if _, err = p.Evaluate(context.Background(), []byte("T")); errors.Is(err, policy.ErrTrap) {
								err = nil
							}
						case 2:
							if _, err = p.Evaluate(context.Background(), []byte("J")); errors.Is(err, policy.ErrInvalidResponse) {
								err = nil
							}
						}
						if err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

func TestConcurrentCallsOnTheRealModule(t *testing.T) {
	vectors := loadVectors(t)
	for _, engine := range engines[:2] {
		t.Run(engine.name, func(t *testing.T) {
			p := load(t, engine.opts...)
			var wg sync.WaitGroup
			var mu sync.Mutex
			var failures []string
			for g := range 4 {
				wg.Go(func() {
					for i := g; i < len(vectors); i += 4 {
						v := vectors[i]
						response, err := p.Evaluate(context.Background(), v.request)
						if err != nil {
							mu.Lock()
							failures = append(failures, v.name+": "+err.Error())
							mu.Unlock()
							continue
						}
						if got := normalize(t, response); !equal(got, v.expected) {
							mu.Lock()
							failures = append(failures, v.name+": a different response")
							mu.Unlock()
						}
					}
				})
			}
			wg.Wait()
			for _, f := range failures {
				t.Error(f)
			}
		})
	}
}

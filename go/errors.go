package policy

import (
	"errors"
	"fmt"
)

// Sentinels for the ways an evaluation fails, matched with errors.Is against an
// [*EvalError].
var (
	// ErrTimeout: the call ran past its deadline (the context's, or [WithTimeout]). The
	// error also matches context.DeadlineExceeded.
	ErrTimeout = errors.New("deadline exceeded")
	// ErrCanceled: the caller's context was canceled during the call. The error also
	// matches context.Canceled.
	ErrCanceled = errors.New("canceled")
	// ErrMemoryLimit: the module asked for more memory than [WithMemoryLimit] allows.
	ErrMemoryLimit = errors.New("memory limit exceeded")
	// ErrTrap: the module trapped (unreachable, stack overflow, out-of-bounds access...).
	ErrTrap = errors.New("trap")
	// ErrOutOfBounds: a buffer the module handed out does not lie inside its memory.
	ErrOutOfBounds = errors.New("buffer outside the module's memory")
	// ErrAllocFailed: regcred_alloc returned 0 for a non-empty request.
	ErrAllocFailed = errors.New("the module could not allocate the request buffer")
	// ErrInvalidResponse: the response is not UTF-8, not JSON, or not the shape the
	// ABI promises.
	ErrInvalidResponse = errors.New("invalid response")
	// ErrInputTooLarge: the request is above [WithInputLimit]; the module did not run.
	ErrInputTooLarge = errors.New("request too large")
	// ErrClosed: the Policy was closed.
	ErrClosed = errors.New("policy closed")
)

// EvalError is a failed evaluation. Kind is one of the Err* sentinels above, and
// errors.Is(err, Kind) holds. The call's instance was dropped; the Policy goes on
// serving.
type EvalError struct {
	// Kind is the sentinel this error matches.
	Kind error
	// Detail says more, for people: the trap's message, the buffer's bounds. It never
	// quotes the request or the response.
	Detail string
	// Err is the underlying error when there is one (wazero's, or the context's).
	Err error
}

func (e *EvalError) Error() string {
	if e.Detail == "" {
		return "policy: " + e.Kind.Error()
	}
	return "policy: " + e.Kind.Error() + ": " + e.Detail
}

// Is reports whether target is e's Kind.
func (e *EvalError) Is(target error) bool { return target == e.Kind }

// Unwrap returns the underlying error.
func (e *EvalError) Unwrap() error { return e.Err }

// RejectedError is the policy's refusal of a request in a typed call: the "error"
// response of policy-wasm/ABI.md. Match on Code ("bad_request", "too_large",
// "invalid_image", "invalid_config", "invalid_secret"); Message is for people and never
// quotes a secret value.
type RejectedError struct {
	Code    string
	Message string
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("policy: rejected (%s): %s", e.Code, e.Message)
}

// Sentinels for the ways loading a module fails, matched with errors.Is against a
// [*LoadError].
var (
	// ErrInvalidPin: the [WithSHA256] value is not 64 hex digits.
	ErrInvalidPin = errors.New("not a sha256 digest")
	// ErrSHA256Mismatch: the module is not the pinned one.
	ErrSHA256Mismatch = errors.New("sha256 mismatch")
	// ErrUnexpectedImport: the module imports something; policy modules import nothing.
	ErrUnexpectedImport = errors.New("the module imports something")
	// ErrInitialMemory: the module's memory starts above [WithMemoryLimit].
	ErrInitialMemory = errors.New("initial memory above the limit")
	// ErrCompile: wazero cannot compile the module (not WebAssembly, or invalid).
	ErrCompile = errors.New("cannot compile the module")
	// ErrMissingExport: an export the ABI needs is missing.
	ErrMissingExport = errors.New("missing export")
	// ErrExportType: an export the ABI needs has the wrong type.
	ErrExportType = errors.New("export of the wrong type")
	// ErrABIVersion: the module speaks another ABI major version.
	ErrABIVersion = errors.New("unsupported ABI version")
	// ErrProbe: the first instance did not answer its ABI version; Err is the
	// [*EvalError] (a timeout, a trap).
	ErrProbe = errors.New("the module failed its first call")
	// ErrOption: an option's value is out of range.
	ErrOption = errors.New("invalid option")
)

// LoadError is a module [New] refuses. Kind is one of the sentinels above.
type LoadError struct {
	Kind error
	// Detail names what is wrong (the export, the import, the digests).
	Detail string
	// Err is the underlying error (wazero's, or the probe's *EvalError).
	Err error
}

func (e *LoadError) Error() string {
	msg := "policy: loading the module: " + e.Kind.Error()
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Is reports whether target is e's Kind.
func (e *LoadError) Is(target error) bool { return target == e.Kind }

// Unwrap returns the underlying error.
func (e *LoadError) Unwrap() error { return e.Err }

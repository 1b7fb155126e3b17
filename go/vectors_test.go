package policy_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"regcred.dev/policy"
)

// vector is one file of tests/vectors (see its README).
type vector struct {
	name        string
	description string
	raw         json.RawMessage // the "request" value, when the request is JSON
	request     []byte
	expected    any
}

func vectorsDir() string {
	if dir := os.Getenv("REGCRED_VECTORS"); dir != "" {
		return dir
	}
	return filepath.Join("..", "tests", "vectors")
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(vectorsDir(), "*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no vectors in %s (%v)", vectorsDir(), err)
	}
	sort.Strings(paths)
	vectors := make([]vector, 0, len(paths))
	for _, path := range paths {
		name := strings.TrimSuffix(filepath.Base(path), ".json")
		text, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var file map[string]json.RawMessage
		if err := json.Unmarshal(text, &file); err != nil {
			t.Fatalf("%s: not JSON: %v", name, err)
		}
		v := vector{name: name}
		_ = json.Unmarshal(file["description"], &v.description)
		sources := 0
		if raw, ok := file["request"]; ok {
			sources++
			var compact bytes.Buffer
			if err := json.Compact(&compact, raw); err != nil {
				t.Fatalf("%s: request: %v", name, err)
			}
			v.raw, v.request = raw, compact.Bytes()
		}
		if raw, ok := file["request_text"]; ok {
			sources++
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				t.Fatalf("%s: request_text is not a string: %v", name, err)
			}
			v.request = []byte(s)
		}
		if raw, ok := file["request_base64"]; ok {
			sources++
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				t.Fatalf("%s: request_base64: %v", name, err)
			}
			if v.request, err = base64.StdEncoding.DecodeString(s); err != nil {
				t.Fatalf("%s: request_base64: %v", name, err)
			}
		}
		if sources != 1 {
			t.Fatalf("%s: needs exactly one request field, has %d", name, sources)
		}
		response, ok := file["response"]
		if !ok {
			t.Fatalf("%s: no response", name)
		}
		v.expected = normalize(t, response)
		vectors = append(vectors, v)
	}
	return vectors
}

// number is a JSON number as serde_json compares it: an integer by value, anything
// with a fraction or an exponent as a float.
type number struct {
	integer string
	float   float64
	isFloat bool
}

// normalize decodes JSON for comparison the way the Rust runners compare
// serde_json::Value: object key order ignored, everything else exact.
func normalize(t testing.TB, raw []byte) any {
	t.Helper()
	decoder := json.NewDecoder(bytes.NewReader(raw))
	decoder.UseNumber()
	var value any
	if err := decoder.Decode(&value); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if decoder.More() {
		t.Fatalf("trailing data after the JSON value")
	}
	return numbers(t, value)
}

func numbers(t testing.TB, value any) any {
	switch v := value.(type) {
	case json.Number:
		if strings.ContainsAny(string(v), ".eE") {
			f, err := v.Float64()
			if err != nil {
				t.Fatalf("number %s: %v", v, err)
			}
			return number{float: f, isFloat: true}
		}
		return number{integer: strings.TrimPrefix(string(v), "+")}
	case []any:
		for i := range v {
			v[i] = numbers(t, v[i])
		}
	case map[string]any:
		for k := range v {
			v[k] = numbers(t, v[k])
		}
	}
	return value
}

// checkAll asserts every vector the answer function answers, reporting all
// mismatches at once.
func checkAll(t *testing.T, vectors []vector, answer func(vector) ([]byte, bool)) {
	t.Helper()
	checked := 0
	for _, v := range vectors {
		got, ok := answer(v)
		if !ok {
			continue
		}
		checked++
		if actual := normalize(t, got); !reflect.DeepEqual(actual, v.expected) {
			t.Errorf("%s (%s):\n  actual %s", v.name, v.description, got)
		}
	}
	if checked == 0 {
		t.Fatal("no vector checked")
	}
	t.Logf("%d vectors checked", checked)
}

// engines are the ways the tests load the policy.
var engines = []struct {
	name string
	opts []policy.Option
}{
	{"compiler_fresh", nil},
	{"compiler_reused", []policy.Option{policy.WithInstanceReuse(2)}},
	{"interpreter_fresh", []policy.Option{policy.WithInterpreter()}},
	{"interpreter_reused", []policy.Option{policy.WithInterpreter(), policy.WithInstanceReuse(1)}},
}

func load(t testing.TB, opts ...policy.Option) *policy.Policy {
	t.Helper()
	ctx := context.Background()
	// The limits have their own tests (hostile_test.go); a loaded test machine must
	// not turn a slow call into a failed vector.
	opts = append([]policy.Option{policy.WithTimeout(10 * time.Second)}, opts...)
	p, err := policy.New(ctx, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

func TestEvaluateAgreesWithEveryVector(t *testing.T) {
	vectors := loadVectors(t)
	for _, engine := range engines {
		t.Run(engine.name, func(t *testing.T) {
			p := load(t, engine.opts...)
			checkAll(t, vectors, func(v vector) ([]byte, bool) {
				response, err := p.Evaluate(context.Background(), v.request)
				if err != nil {
					t.Fatalf("%s: %v", v.name, err)
				}
				return response, true
			})
		})
	}
}

// typedRequest is a request the typed API can express: a known op with its fields only.
type typedRequest struct {
	Op      string            `json:"op"`
	Secret  json.RawMessage   `json:"secret"`
	Secrets []json.RawMessage `json:"secrets"`
	Image   *string           `json:"image"`
	Runtime policy.Runtime    `json:"runtime"`
	Config  *policy.Config    `json:"config"`
}

func parseTyped(raw json.RawMessage) (typedRequest, bool) {
	var r typedRequest
	if raw == nil {
		return r, false
	}
	decoder := json.NewDecoder(bytes.NewReader(raw))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&r); err != nil {
		return r, false
	}
	switch r.Op {
	case "validate", "convert":
		return r, r.Secret != nil && r.Secrets == nil && r.Image == nil && r.Runtime == "" &&
			(r.Op == "validate" || r.Config == nil)
	case "resolve":
		return r, r.Secret == nil && r.Secrets != nil && r.Image != nil
	}
	return r, false
}

// typedResponse is the response rebuilt from the typed API's result, as the module
// would write it.
func typedResponse(t *testing.T, p *policy.Policy, r typedRequest) []byte {
	ctx := context.Background()
	var result any
	var err error
	switch r.Op {
	case "validate":
		var report *policy.ValidationReport
		report, err = p.Validate(ctx, r.Secret, r.Config)
		result = map[string]any{"ok": report}
	case "resolve":
		secrets := make([]any, len(r.Secrets))
		for i := range r.Secrets {
			secrets[i] = r.Secrets[i]
		}
		var resolution *policy.Resolution
		resolution, err = p.Resolve(ctx, *r.Image, secrets, r.Runtime, r.Config)
		if err == nil {
			response := map[string]any{"ok": resolution.Candidates}
			if len(resolution.Warnings) > 0 {
				response["warnings"] = resolution.Warnings
			}
			result = response
		}
	case "convert":
		var secrets []json.RawMessage
		secrets, err = p.Convert(ctx, r.Secret)
		result = map[string]any{"ok": secrets}
	}
	var rejected *policy.RejectedError
	if errors.As(err, &rejected) {
		result = map[string]any{"error": map[string]string{"code": rejected.Code, "message": rejected.Message}}
	} else if err != nil {
		t.Fatalf("the typed call failed: %v", err)
	}
	out, err := json.Marshal(result)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestTypedAPIAgreesWithEveryVector(t *testing.T) {
	vectors := loadVectors(t)
	for _, engine := range engines[:2] {
		t.Run(engine.name, func(t *testing.T) {
			p := load(t, engine.opts...)
			checkAll(t, vectors, func(v vector) ([]byte, bool) {
				r, ok := parseTyped(v.raw)
				if !ok {
					return nil, false
				}
				return typedResponse(t, p, r), true
			})
		})
	}
}

// The embedded module is the one recorded for this commit; the Rust side
// (tests/tests/all/module_digest.rs) checks that this commit's sources build it.
func TestEmbeddedModuleIsTheRecordedModule(t *testing.T) {
	text, err := os.ReadFile(filepath.Join("..", "policy-wasm", "module.sha256"))
	if err != nil {
		t.Fatal(err)
	}
	var recorded string
	for _, line := range strings.Split(string(text), "\n") {
		if fields := strings.Fields(line); len(fields) > 0 && !strings.HasPrefix(line, "#") {
			recorded = fields[0]
			break
		}
	}
	sum := sha256.Sum256(policy.Module)
	if got := hex.EncodeToString(sum[:]); got != recorded {
		t.Fatalf("the embedded module is %s, policy-wasm/module.sha256 records %s", got, recorded)
	}
	p := load(t, policy.WithSHA256(recorded))
	if p.SHA256() != recorded {
		t.Fatalf("SHA256() = %s", p.SHA256())
	}
	if v := p.ABIVersion(); v.Major != policy.ABIMajor {
		t.Fatalf("ABI %v", v)
	}
}

func equal(a, b any) bool { return reflect.DeepEqual(a, b) }

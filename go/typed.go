package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
)

// Config is the site policy applied on top of the rules
// (schemas/policy-config.schema.json). The zero value is the default: any registry, the
// built-in limits. Limits can only be lowered.
type Config struct {
	// AllowedRegistries: HOST[:PORT][/PATH] patterns a Secret's serverAddress must
	// match. Nil: any registry; empty and non-nil: none.
	AllowedRegistries []string `json:"allowedRegistries,omitzero"`
	// MaxSecretBytes: the largest total of decoded values (at most 1048576).
	MaxSecretBytes *uint32 `json:"maxSecretBytes,omitempty"`
	// MaxValueBytes: the largest decoded value (at most 65536).
	MaxValueBytes *uint32 `json:"maxValueBytes,omitempty"`
}

func (c *Config) isDefault() bool {
	return c == nil || (c.AllowedRegistries == nil && c.MaxSecretBytes == nil && c.MaxValueBytes == nil)
}

// Secret is a Kubernetes Secret as the policy reads it. The typed calls accept any
// value that marshals to a Secret's JSON: this type, a *corev1.Secret from k8s.io/api,
// or a json.RawMessage.
type Secret struct {
	APIVersion string            `json:"apiVersion,omitempty"`
	Kind       string            `json:"kind,omitempty"`
	Metadata   ObjectMeta        `json:"metadata"`
	Type       string            `json:"type,omitempty"`
	Data       map[string][]byte `json:"data,omitempty"`
	StringData map[string]string `json:"stringData,omitempty"`
}

// ObjectMeta is the part of a Secret's metadata the policy reads.
type ObjectMeta struct {
	Name         string `json:"name,omitempty"`
	GenerateName string `json:"generateName,omitempty"`
	Namespace    string `json:"namespace,omitempty"`
}

// Runtime is the container runtime an AuthConfig is filled for.
type Runtime string

// The runtimes of the ABI's resolve request.
const (
	Containerd  Runtime = "containerd"
	CRIO        Runtime = "cri-o"
	Passthrough Runtime = "passthrough"
)

// ValidationReport is the verdict on one Secret.
type ValidationReport struct {
	// Secret is "namespace/name" (or what the Secret has of it).
	Secret     string      `json:"secret"`
	Valid      bool        `json:"valid"`
	Violations []Violation `json:"violations"`
	Warnings   []Warning   `json:"warnings"`
}

// Violation is a rule a Secret breaks; Type is Kubernetes' field error type
// (FieldValueRequired, FieldValueInvalid, ...).
type Violation struct {
	Field   string `json:"field"`
	Type    string `json:"type"`
	Message string `json:"message"`
}

// Warning is something valid but worth a look (plain HTTP, a token without a user).
type Warning struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Resolution is what resolve answers: the credentials to try, most specific first,
// and a line per secret or entry skipped.
type Resolution struct {
	Candidates []Candidate
	Warnings   []string
}

// Candidate is one set of credentials for an image.
type Candidate struct {
	// Secret is the Secret's "namespace/name".
	Secret string `json:"secret"`
	// Matched is the serverAddress pattern that matched the image.
	Matched    string     `json:"matched"`
	AuthConfig AuthConfig `json:"authConfig"`
}

// AuthConfig is the CRI runtime.v1 AuthConfig (proto3 JSON names). Credential fields
// are [Sensitive]: printing an AuthConfig never shows them.
type AuthConfig struct {
	Username      string    `json:"username,omitempty"`
	Password      Sensitive `json:"password,omitempty"`
	Auth          Sensitive `json:"auth,omitempty"`
	ServerAddress string    `json:"serverAddress,omitempty"`
	IdentityToken Sensitive `json:"identityToken,omitempty"`
	RegistryToken Sensitive `json:"registryToken,omitempty"`
}

// Sensitive is a credential. fmt and log/slog print it as "[redacted]" (empty stays
// empty); JSON encoding keeps the value, for passing it on. string(v) is the value.
type Sensitive string

const redacted = "[redacted]"

// String implements fmt.Stringer.
func (s Sensitive) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString implements fmt.GoStringer (%#v).
func (s Sensitive) GoString() string { return fmt.Sprintf("%q", s.String()) }

// Format implements fmt.Formatter: every verb, %x and %q included, prints the redacted
// form.
func (s Sensitive) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = f.Write([]byte(s.GoString()))
		return
	}
	_, _ = f.Write([]byte(s.String()))
}

// LogValue implements slog.LogValuer.
func (s Sensitive) LogValue() slog.Value { return slog.StringValue(s.String()) }

type validateRequest struct {
	Op     string  `json:"op"`
	Secret any     `json:"secret"`
	Config *Config `json:"config,omitempty"`
}

type resolveRequest struct {
	Op      string  `json:"op"`
	Image   string  `json:"image"`
	Secrets []any   `json:"secrets"`
	Runtime Runtime `json:"runtime,omitempty"`
	Config  *Config `json:"config,omitempty"`
}

type convertRequest struct {
	Op     string `json:"op"`
	Secret any    `json:"secret"`
}

// response is the ABI's answer: {"ok": ..., "warnings": [...]} or {"error": {...}}.
type response struct {
	OK       json.RawMessage `json:"ok"`
	Warnings []string        `json:"warnings"`
	Error    *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// Validate checks one Secret against the rules and config (nil: the defaults). A
// *RejectedError is the policy refusing the request itself (code "invalid_config" for
// a bad config, "bad_request" for a secret that is not a JSON object).
func (p *Policy) Validate(ctx context.Context, secret any, config *Config) (*ValidationReport, error) {
	if config.isDefault() {
		config = nil
	}
	var report ValidationReport
	if _, err := p.typed(ctx, validateRequest{Op: "validate", Secret: secret, Config: config}, &report); err != nil {
		return nil, err
	}
	return &report, nil
}

// Resolve returns the credentials to try for image from secrets (in imagePullSecrets
// order), filled for runtime ("" is containerd). A malformed image reference is a
// *RejectedError with code "invalid_image". The result carries credentials: do not log
// it whole (its [Sensitive] fields print redacted, JSON encoding does not redact).
func (p *Policy) Resolve(ctx context.Context, image string, secrets []any, runtime Runtime, config *Config) (*Resolution, error) {
	if config.isDefault() {
		config = nil
	}
	if secrets == nil {
		secrets = []any{}
	}
	var candidates []Candidate
	warnings, err := p.typed(ctx, resolveRequest{Op: "resolve", Image: image, Secrets: secrets, Runtime: runtime, Config: config}, &candidates)
	if err != nil {
		return nil, err
	}
	return &Resolution{Candidates: candidates, Warnings: warnings}, nil
}

// Convert turns a kubernetes.io/dockerconfigjson or dockercfg Secret into
// regcredentials Secrets, returned as JSON objects. A Secret it cannot read is a
// *RejectedError with code "invalid_secret".
func (p *Policy) Convert(ctx context.Context, secret any) ([]json.RawMessage, error) {
	var secrets []json.RawMessage
	if _, err := p.typed(ctx, convertRequest{Op: "convert", Secret: secret}, &secrets); err != nil {
		return nil, err
	}
	return secrets, nil
}

// typed sends request and decodes the "ok" result into result.
func (p *Policy) typed(ctx context.Context, request any, result any) ([]string, error) {
	body, err := json.Marshal(request)
	if err != nil {
		// The message names the Go type, never a value.
		return nil, fmt.Errorf("policy: encoding the request: %w", err)
	}
	raw, err := p.call(ctx, body)
	if err != nil {
		return nil, err
	}
	var resp response
	decoder := json.NewDecoder(bytes.NewReader(raw))
	if err := decoder.Decode(&resp); err != nil {
		return nil, &EvalError{Kind: ErrInvalidResponse, Detail: "the response is not a JSON object"}
	}
	if resp.Error != nil {
		return nil, &RejectedError{Code: resp.Error.Code, Message: resp.Error.Message}
	}
	if resp.OK == nil {
		return nil, &EvalError{Kind: ErrInvalidResponse, Detail: `the response has neither "ok" nor "error"`}
	}
	if err := json.Unmarshal(resp.OK, result); err != nil {
		return nil, &EvalError{Kind: ErrInvalidResponse, Detail: fmt.Sprintf("the result is not a %T", result)}
	}
	return resp.Warnings, nil
}

// LogValue implements slog.LogValuer: the credentials redacted (slog's JSON handler
// would otherwise encode them with encoding/json, which keeps them).
func (a AuthConfig) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("username", a.Username), slog.String("serverAddress", a.ServerAddress)}
	for _, field := range []struct {
		key   string
		value Sensitive
	}{{"password", a.Password}, {"auth", a.Auth}, {"identityToken", a.IdentityToken}, {"registryToken", a.RegistryToken}} {
		if field.value != "" {
			attrs = append(attrs, slog.String(field.key, field.value.String()))
		}
	}
	return slog.GroupValue(attrs...)
}

// LogValue implements slog.LogValuer, with the credentials redacted.
func (c Candidate) LogValue() slog.Value {
	return slog.GroupValue(slog.String("secret", c.Secret), slog.String("matched", c.Matched),
		slog.Any("authConfig", c.AuthConfig.LogValue()))
}

// LogValue implements slog.LogValuer, with the credentials redacted.
func (r Resolution) LogValue() slog.Value {
	candidates := make([]slog.Attr, len(r.Candidates))
	for i, c := range r.Candidates {
		candidates[i] = slog.Any(fmt.Sprint(i), c.LogValue())
	}
	return slog.GroupValue(slog.Any("candidates", slog.GroupValue(candidates...)), slog.Any("warnings", r.Warnings))
}

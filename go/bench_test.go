package policy_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"regcred.dev/policy"
)

// The requests of host/benches/policy.rs: validate one regcredentials Secret
// (stringData, three keys); resolve quay.io/org/app:1.0 against three Secrets
// (docker.io, quay.io/org, quay.io), containerd profile. Figures and the command that
// runs them beside the Rust benchmark are in BENCHMARKS.md.

func benchSecret(name, server string) policy.Secret {
	return policy.Secret{
		APIVersion: "v1", Kind: "Secret", Type: "kubernetes.io/regcredentials",
		Metadata: policy.ObjectMeta{Name: name, Namespace: "apps"},
		StringData: map[string]string{
			"serverAddress": server,
			"username":      "robot",
			"password":      "not-a-real-password-0123456789",
		},
	}
}

const benchImage = "quay.io/org/app:1.0"

func benchSecrets() []any {
	return []any{benchSecret("hub", "docker.io"), benchSecret("quay-org", "quay.io/org"), benchSecret("quay", "quay.io")}
}

var benchModes = []struct {
	name string
	opts []policy.Option
}{
	{"compiler_fresh", nil},
	{"compiler_reused", []policy.Option{policy.WithInstanceReuse(1)}},
	{"interpreter_fresh", []policy.Option{policy.WithInterpreter()}},
	{"interpreter_reused", []policy.Option{policy.WithInterpreter(), policy.WithInstanceReuse(1)}},
}

func BenchmarkValidate(b *testing.B) {
	ctx := context.Background()
	one := benchSecret("quay", "quay.io")
	request, _ := json.Marshal(map[string]any{"op": "validate", "secret": one})
	for _, mode := range benchModes {
		p := load(b, mode.opts...)
		b.Run(mode.name+"/typed", func(b *testing.B) {
			for b.Loop() {
				if _, err := p.Validate(ctx, one, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(mode.name+"/json", func(b *testing.B) {
			for b.Loop() {
				if _, err := p.Evaluate(ctx, request); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkResolve3Secrets(b *testing.B) {
	ctx := context.Background()
	secrets := benchSecrets()
	request, _ := json.Marshal(map[string]any{"op": "resolve", "image": benchImage, "secrets": secrets})
	for _, mode := range benchModes {
		p := load(b, mode.opts...)
		b.Run(mode.name+"/typed", func(b *testing.B) {
			for b.Loop() {
				if _, err := p.Resolve(ctx, benchImage, secrets, policy.Containerd, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(mode.name+"/json", func(b *testing.B) {
			for b.Loop() {
				if _, err := p.Evaluate(ctx, request); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Compiling and checking the module: what a process pays once at start (the probe's
// deadline raised: the first instance of a freshly compiled module is slower).
func BenchmarkLoad(b *testing.B) {
	ctx := context.Background()
	for _, mode := range []struct {
		name string
		opts []policy.Option
	}{benchModes[0], benchModes[2]} {
		b.Run(mode.name, func(b *testing.B) {
			for b.Loop() {
				p, err := policy.New(ctx, append([]policy.Option{policy.WithTimeout(time.Second)}, mode.opts...)...)
				if err != nil {
					b.Fatal(err)
				}
				_ = p.Close(ctx)
			}
		})
	}
}

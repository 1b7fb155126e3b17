package policy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"regcred.dev/policy"
)

const canary = "canary-not-a-real-password-7f3a9c"

// No credential shows in what a host prints or logs: the typed results, the errors,
// slog records.
func TestCredentialsNeverPrint(t *testing.T) {
	p := load(t)
	ctx := context.Background()
	secret := policy.Secret{
		APIVersion: "v1", Kind: "Secret", Type: "kubernetes.io/regcredentials",
		Metadata: policy.ObjectMeta{Name: "canary", Namespace: "apps"},
		StringData: map[string]string{
			"serverAddress": "registry.example", "username": "robot", "password": canary,
			"identityToken": canary + "-id",
		},
	}
	resolution, err := p.Resolve(ctx, "registry.example/app", []any{secret}, policy.Passthrough, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(resolution.Candidates) != 1 || string(resolution.Candidates[0].AuthConfig.Password) != canary {
		t.Fatalf("the credentials did not come through: %d candidates", len(resolution.Candidates))
	}
	var logged bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logged, nil))
	c := resolution.Candidates[0]
	logger.Info("resolved", "resolution", resolution, "candidate", c, "password", c.AuthConfig.Password, "auth", c.AuthConfig)
	printed := strings.Join([]string{
		fmt.Sprint(resolution), fmt.Sprintf("%v", c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c),
		fmt.Sprintf("%s|%q|%x|%X|%v", c.AuthConfig.Password, c.AuthConfig.Password, c.AuthConfig.Password,
			c.AuthConfig.Password, c.AuthConfig.IdentityToken),
		logged.String(),
	}, "\n")
	if strings.Contains(printed, canary) {
		t.Fatalf("a credential was printed:\n%s", printed)
	}
	if !strings.Contains(printed, "[redacted]") {
		t.Fatalf("nothing says redacted:\n%s", printed)
	}
	// JSON encoding keeps the value: passing credentials on is the point.
	encoded, _ := json.Marshal(c.AuthConfig)
	if !strings.Contains(string(encoded), canary) {
		t.Fatalf("JSON lost the credential: %s", encoded)
	}

	// Reports and errors about a Secret with a credential do not quote it.
	broken := secret
	broken.StringData = map[string]string{"serverAddress": "registry.example", "password": canary + "\x01"}
	report, err := p.Validate(ctx, broken, nil)
	if err != nil || report.Valid {
		t.Fatalf("the broken Secret: %v, %+v", err, report)
	}
	if text := fmt.Sprintf("%+v", report); strings.Contains(text, canary) {
		t.Fatalf("the report quotes the credential: %s", text)
	}
	_, tooLarge := load(t, policy.WithInputLimit(64)).Validate(ctx, secret, nil)
	if !errors.Is(tooLarge, policy.ErrInputTooLarge) {
		t.Fatalf("got %v", tooLarge)
	}
	for _, e := range []error{tooLarge} {
		if strings.Contains(e.Error(), canary) {
			t.Fatalf("an error quotes the credential: %v", e)
		}
	}
}

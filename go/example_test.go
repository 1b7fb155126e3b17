package policy_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"regcred.dev/policy"
)

// A node component validates a Secret and finds the credentials for an image pull.
func Example() {
	ctx := context.Background()
	// The embedded module; compile once per process and share. Calls are bounded by
	// the context's deadline and WithTimeout (default 50 ms), memory by WithMemoryLimit.
	p, err := policy.New(ctx, policy.WithTimeout(time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close(ctx)

	secret := policy.Secret{
		APIVersion: "v1",
		Kind:       "Secret",
		Metadata:   policy.ObjectMeta{Name: "quay", Namespace: "apps"},
		Type:       "kubernetes.io/regcredentials",
		StringData: map[string]string{
			"serverAddress": "quay.io/my-org",
			"username":      "my-org+robot",
			"password":      "not-a-real-password",
		},
	}
	report, err := p.Validate(ctx, secret, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(report.Secret, "valid:", report.Valid)

	resolution, err := p.Resolve(ctx, "quay.io/my-org/app:1.0", []any{secret}, policy.CRIO, nil)
	if err != nil {
		log.Fatal(err)
	}
	for _, c := range resolution.Candidates {
		// Credentials print redacted; string(c.AuthConfig.Password) is the value.
		fmt.Printf("%s matched %s: %+v\n", c.Secret, c.Matched, c.AuthConfig)
	}

	_, err = p.Resolve(ctx, "Quay.io/App", []any{secret}, policy.CRIO, nil)
	var rejected *policy.RejectedError
	if errors.As(err, &rejected) {
		fmt.Println("rejected:", rejected.Code)
	}
	// Output:
	// apps/quay valid: true
	// apps/quay matched quay.io/my-org: {Username:my-org+robot Password:[redacted] Auth: ServerAddress:quay.io IdentityToken: RegistryToken:}
	// rejected: invalid_image
}

// Evaluate takes and returns the raw JSON of policy-wasm/ABI.md.
func ExamplePolicy_Evaluate() {
	ctx := context.Background()
	p, err := policy.New(ctx, policy.WithTimeout(time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close(ctx)
	response, err := p.Evaluate(ctx, []byte(`{"op": "frobnicate"}`))
	if err != nil {
		log.Fatal(err) // the module failed or hit a limit: an *EvalError
	}
	fmt.Println(len(response) > 0, p.ABIVersion().Major)
	// Output: true 1
}

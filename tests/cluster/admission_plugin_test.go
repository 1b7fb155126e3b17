// `kubectl regcred create|validate|convert` as a kubectl plugin against the real API server.

package kit

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// `kubectl regcred create --apply` against the real API server: the Secret is created
// with its type and keys, a pod using it runs on the node, `kubectl regcred validate`
// of the Secret fetched back passes, and an invalid one is refused before anything is
// sent.
func TestPluginCreateApply(t *testing.T) {
	ctx := context2(t, 4*time.Minute)
	ns := namespace(t, ctx)
	plugins := t.TempDir()
	if err := os.Symlink(regcredBinary(t), filepath.Join(plugins, "kubectl-regcred")); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"PATH=" + plugins + string(os.PathListSeparator) + os.Getenv("PATH"),
		"KUBECTL=" + kit.Env["REGCRED_CLUSTER_KUBECTL"],
		"KUBECONFIG=" + kit.Env["REGCRED_CLUSTER_KUBECONFIG"],
	}
	basic := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"]
	out, err := kubectl(ctx, []byte(password()), env, "regcred", "create", "creds", "--server", basic,
		"--username", user(), "--password-stdin", "-n", ns, "--apply")
	if err != nil {
		t.Fatalf("kubectl regcred create --apply: %v\n%s", err, out)
	}
	secret, err := kit.Client.CoreV1().Secrets(ns).Get(ctx, "creds", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if secret.Type != "kubernetes.io/regcredentials" || string(secret.Data["serverAddress"]) != basic ||
		string(secret.Data["username"]) != user() || string(secret.Data["password"]) != password() {
		t.Fatalf("the created Secret: type %s, keys %v", secret.Type, keysOf(secret.Data))
	}
	runPod(t, ctx, ns, kit.PodSpec("from-plugin", kit.Image("BASIC"), "creds"))

	fetched, err := kubectl(ctx, nil, nil, "get", "secret", "creds", "-n", ns, "-o", "yaml")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := kubectl(ctx, []byte(fetched), env, "regcred", "validate", "-f", "-"); err != nil || !strings.Contains(out, ": valid") {
		t.Errorf("kubectl regcred validate of the fetched Secret: %v\n%s", err, out)
	}
	// The same Secret validated where it lives, by name and with every Secret of the
	// namespace (kubectl's grammar).
	if out, err := kubectl(ctx, nil, env, "regcred", "validate", "secret", "creds", "-n", ns); err != nil || !strings.Contains(out, "secret/"+ns+"/creds: "+ns+"/creds: valid") {
		t.Errorf("kubectl regcred validate secret creds: %v\n%s", err, out)
	}
	if out, err := kubectl(ctx, nil, env, "regcred", "validate", "secrets", "-n", ns, "-o", "json"); err != nil || !strings.Contains(out, `"valid": true`) {
		t.Errorf("kubectl regcred validate secrets -o json: %v\n%s", err, out)
	}
	// --dry-run=server: the API server's checks, nothing stored.
	out, err = kubectl(ctx, []byte(password()), env, "regcred", "create", "dry", "--server", basic,
		"--username", user(), "--password-stdin", "-n", ns, "--apply", "--dry-run=server")
	if err != nil || !strings.Contains(out, "secret/dry serverside-applied (server dry run)") {
		t.Errorf("create --apply --dry-run=server: %v\n%s", err, out)
	}
	if _, err := kit.Client.CoreV1().Secrets(ns).Get(ctx, "dry", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the server dry run stored the Secret: %v", err)
	}

	// convert takes the same --apply and --dry-run: a Docker config Secret of the
	// cluster, read with kubectl, becomes a regcredentials Secret the API server stores.
	dockerConfig := fmt.Sprintf(`{"auths":{%q:{"username":%q,"password":%q}}}`, basic, user(), password())
	if _, err := kit.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "docker-old"},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(dockerConfig)},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	old, err := kubectl(ctx, nil, nil, "get", "secret", "docker-old", "-n", ns, "-o", "yaml")
	if err != nil {
		t.Fatal(err)
	}
	before, err := kit.Client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out, err = kubectl(ctx, []byte(old), env, "regcred", "convert", "-", "--apply", "--dry-run=server")
	if err != nil || !strings.Contains(out, "serverside-applied (server dry run)") {
		t.Errorf("convert --apply --dry-run=server: %v\n%s", err, out)
	}
	if after, err := kit.Client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); err != nil || len(after.Items) != len(before.Items) {
		t.Errorf("the server dry run of convert stored something: %v", err)
	}
	out, err = kubectl(ctx, []byte(old), env, "regcred", "convert", "-", "--apply")
	if err != nil {
		t.Fatalf("convert --apply: %v\n%s", err, out)
	}
	name := strings.TrimPrefix(strings.Fields(out)[0], "secret/")
	converted, err := kit.Client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("convert --apply printed %q: %v", out, err)
	}
	if converted.Type != "kubernetes.io/regcredentials" || string(converted.Data["password"]) != password() ||
		converted.ManagedFields[0].Manager != "regcred" {
		t.Errorf("the converted Secret: type %s, keys %v, managers %v", converted.Type, keysOf(converted.Data), converted.ManagedFields)
	}
	if strings.Contains(out, password()) {
		t.Errorf("the password is in convert's output")
	}

	out, err = kubectl(ctx, []byte(password()), env, "regcred", "create", "bad", "--server", "https://"+basic+"?x=1",
		"--username", user(), "--password-stdin", "-n", ns, "--apply")
	if err == nil {
		t.Fatalf("an invalid Secret: created:\n%s", out)
	}
	if _, err := kit.Client.CoreV1().Secrets(ns).Get(ctx, "bad", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the invalid Secret reached the API server: %v", err)
	}
	if strings.Contains(out, password()) {
		t.Errorf("the password is in the plugin's output")
	}
}

func keysOf(m map[string][]byte) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

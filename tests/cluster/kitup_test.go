package kit

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// requireBareKit fails a test that installs regcred's chart itself on a kit whose `up`
// already did (`scripts/cluster up --regcred chart`, the default).
func requireBareKit(t *testing.T) {
	t.Helper()
	if got := kit.Env["REGCRED_CLUSTER_REGCRED"]; got != "bare" {
		t.Fatalf("this test installs regcred's chart itself; the kit in %s has regcred=%q: bring it up with `scripts/cluster up --regcred bare` (scripts/test does)", kit.Dir, got)
	}
}

// What `scripts/cluster up` promises about regcred itself. With `--regcred chart` (the
// default, for trying regcred): the chart is installed as release regcred in
// regcred-system, from regcred's own image in the kit's registry, its webhook pods are
// Ready and the API server refuses a broken regcredentials Secret with the webhook's
// verdict naming the field, while a valid one is stored. With `--regcred bare` (the
// tests that install regcred themselves): no release, and the same broken Secret is
// stored, since nothing checks it.
func TestKitUpInstallsRegcred(t *testing.T) {
	ctx := context2(t, 3*time.Minute)
	ns := namespace(t, ctx)
	broken := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "broken", Namespace: ns},
		Type:       "kubernetes.io/regcredentials",
		StringData: map[string]string{"username": "u", "password": "p"},
	}
	status, statusErr := helm(ctx, "status", "regcred", "--namespace", deployNamespace, "-o", "json")
	switch mode := kit.Env["REGCRED_CLUSTER_REGCRED"]; mode {
	case "chart":
		if statusErr != nil {
			t.Fatalf("helm status regcred: %v\n%s", statusErr, status)
		}
		var release struct {
			Info struct {
				Status string `json:"status"`
			} `json:"info"`
			Config map[string]any `json:"config"`
		}
		if err := json.Unmarshal([]byte(status), &release); err != nil {
			t.Fatalf("helm status -o json: %v\n%s", err, status)
		}
		if release.Info.Status != "deployed" {
			t.Fatalf("release regcred is %q, want deployed", release.Info.Status)
		}
		node, _ := release.Config["node"].(map[string]any)
		if node["mode"] != kit.Desc.Mode {
			t.Fatalf("the release's node.mode is %v, the kit's mode %q", node["mode"], kit.Desc.Mode)
		}
		deployment, err := kit.Client.AppsV1().Deployments(deployNamespace).Get(ctx, "regcred-webhook", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if deployment.Status.ReadyReplicas != *deployment.Spec.Replicas {
			t.Fatalf("regcred-webhook: %d of %d replicas Ready", deployment.Status.ReadyReplicas, *deployment.Spec.Replicas)
		}
		image := deployment.Spec.Template.Spec.Containers[0].Image
		if !strings.HasPrefix(image, kit.Env["REGCRED_CLUSTER_PUBLIC_REGISTRY"]+"/regcred:") {
			t.Fatalf("the webhook runs %s, not regcred's image from the kit's registry", image)
		}
		_, err = kit.Client.CoreV1().Secrets(ns).Create(ctx, broken, metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), "serverAddress") || strings.Contains(err.Error(), "failed calling webhook") {
			t.Fatalf("the broken Secret: want the chart's webhook refusing it, naming serverAddress; got %v", err)
		}
		mustSecret(t, ctx, ns, "valid", map[string]string{"serverAddress": "registry.example.com", "username": "u", "password": "p"})
	case "bare":
		if statusErr == nil || !strings.Contains(status, "not found") {
			t.Fatalf("a bare kit has no regcred release; helm status says: %v\n%s", statusErr, status)
		}
		if _, err := kit.Client.CoreV1().Secrets(ns).Create(ctx, broken, metav1.CreateOptions{}); err != nil {
			t.Fatalf("a bare kit checks no Secret, yet: %v", err)
		}
	default:
		t.Fatalf("cluster.env says REGCRED_CLUSTER_REGCRED=%q: a kit from an older scripts/cluster, bring it up again", mode)
	}
}

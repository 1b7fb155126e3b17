package kit

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

type doctorCheck struct {
	Check, Status, Detail, Fix string
}

// doctor runs `regcred doctor ARGS -o json`; returns its checks and exit status.
func doctor(t *testing.T, ctx context.Context, args ...string) ([]doctorCheck, int) {
	t.Helper()
	cmd := exec.CommandContext(ctx, regcredBinary(t), append(append([]string{"doctor"}, args...), "-o", "json")...)
	out, err := cmd.Output()
	code := 0
	if exit, ok := err.(*exec.ExitError); ok {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var checks []doctorCheck
	if err := json.Unmarshal(out, &checks); err != nil {
		t.Fatalf("regcred doctor %v: %v\n%s", args, err, out)
	}
	return checks, code
}

func checkStatus(t *testing.T, checks []doctorCheck, prefix, status string) doctorCheck {
	t.Helper()
	for _, c := range checks {
		if strings.HasPrefix(c.Check, prefix) {
			if c.Status != status {
				t.Errorf("check %q is %s, want %s: %s (fix: %s)", c.Check, c.Status, status, c.Detail, c.Fix)
			}
			return c
		}
	}
	t.Errorf("no check %q in %+v", prefix, checks)
	return doctorCheck{}
}

// `regcred doctor` (issue 25), each check seen passing and then failing once. Cluster
// side, against a `regcred webhook` registered with the chart's configuration: the
// configuration, its caBundle, the webhook refusing an invalid Secret in a server-side dry
// run, each node's pull path (kubelet's /configz through the API server) all ok; a
// caBundle of another CA, then the webhook down, each make the dry run an error naming
// the failed call, exit status 1. Node side (--node, the kit's files for the node's):
// kubelet's endpoint, containerd's NRI validator, the agent's socket, its records all
// ok; kubelet's endpoint pointing at containerd, and an agent that is gone (its socket
// file left behind with nothing listening, as a crash leaves it), each an error.
func TestDoctor(t *testing.T) {
	if kit.Desc.Mode != "nri" {
		t.Skipf("the kit in %s runs in %q mode; the node checks are NRI mode's", kit.Dir, kit.Desc.Mode)
	}
	ctx := context2(t, 4*time.Minute)
	ns := namespace(t, ctx)
	w, _, _ := registerWebhook(t, ctx)
	cluster := []string{"--kubeconfig", kit.Env["REGCRED_CLUSTER_KUBECONFIG"], "--webhook-configuration", w.configuration, "-n", ns}

	checks, code := doctor(t, ctx, cluster...)
	if code != 0 {
		t.Errorf("doctor of a working cluster exits %d: %+v", code, checks)
	}
	checkStatus(t, checks, "webhook configuration", "ok")
	// The tests' CA lives a day: doctor warns that it ends within 14 days (a warning
	// leaves the exit status 0).
	if c := checkStatus(t, checks, "caBundle of", "warning"); !strings.Contains(c.Detail, "ends in") {
		t.Errorf("caBundle check: %+v", c)
	}
	checkStatus(t, checks, "webhook answers through the API server", "ok")
	for _, node := range kit.Nodes() {
		checkStatus(t, checks, "node "+node, "ok")
	}

	// A caBundle of another CA.
	other := newCA(t)
	patch := []byte(`{"webhooks":[{"name":"regcredentials.regcred.dev","clientConfig":{"caBundle":"` + b64(other.pem) + `"}}]}`)
	if _, err := kit.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Patch(ctx, w.configuration, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	var failed doctorCheck
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Second) {
		checks, code = doctor(t, ctx, cluster...)
		failed = findCheck(checks, "webhook answers through the API server")
		if failed.Status == "error" || time.Now().After(deadline) {
			break
		}
	}
	if failed.Status != "error" || !strings.Contains(failed.Detail, "failed calling webhook") || code != 1 {
		t.Errorf("with a wrong caBundle: exit %d, %+v", code, failed)
	}
	t.Logf("wrong caBundle: %s", failed.Detail)
	patch = []byte(`{"webhooks":[{"name":"regcredentials.regcred.dev","clientConfig":{"caBundle":"` + b64(w.caPEM) + `"}}]}`)
	if _, err := kit.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Patch(ctx, w.configuration, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}

	// The webhook down.
	w.stop()
	checks, code = doctor(t, ctx, cluster...)
	failed = checkStatus(t, checks, "webhook answers through the API server", "error")
	if !strings.Contains(failed.Detail, "failed calling webhook") || code != 1 {
		t.Errorf("with the webhook down: exit %d, %+v", code, failed)
	}
	t.Logf("webhook down: %s", failed.Detail)

	// Node side.
	node := kit.FirstNode()
	nodeArgs := func(kubeletConfig, socket string) []string {
		return []string{"--node", "--kubelet-config", kubeletConfig, "--agent-socket", socket,
			"--records-dir", node.ProxyRecordsDir, "--containerd-config", filepath.Join(node.Dir, "containerd", "config.toml")}
	}
	checks, code = doctor(t, ctx, nodeArgs(node.KubeletConfig, node.ProxySocket)...)
	if code != 0 {
		t.Errorf("doctor --node of a working node exits %d: %+v", code, checks)
	}
	for _, name := range []string{"kubelet", "containerd", "agent", "records"} {
		checkStatus(t, checks, name, "ok")
	}

	// kubelet's image endpoint at containerd, not the agent.
	config, err := os.ReadFile(node.KubeletConfig)
	if err != nil {
		t.Fatal(err)
	}
	wrong := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(wrong, []byte(strings.ReplaceAll(string(config), node.ProxySocket, node.ContainerdSocket)), 0o600); err != nil {
		t.Fatal(err)
	}
	checks, code = doctor(t, ctx, nodeArgs(wrong, node.ProxySocket)...)
	if c := checkStatus(t, checks, "kubelet", "error"); code != 1 || !strings.Contains(c.Detail, "pulls bypass regcred") {
		t.Errorf("kubelet's endpoint at containerd: exit %d, %+v", code, c)
	}

	// The agent gone, its socket file left behind.
	dead := filepath.Join(t.TempDir(), "cri-proxy.sock")
	listener, err := net.Listen("unix", dead)
	if err != nil {
		t.Fatal(err)
	}
	listener.(*net.UnixListener).SetUnlinkOnClose(false)
	listener.Close()
	deadConfig := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(deadConfig, []byte(strings.ReplaceAll(string(config), node.ProxySocket, dead)), 0o600); err != nil {
		t.Fatal(err)
	}
	checks, code = doctor(t, ctx, nodeArgs(deadConfig, dead)...)
	if c := checkStatus(t, checks, "agent", "error"); code != 1 || !strings.Contains(c.Detail, "does not answer") {
		t.Errorf("the agent gone: exit %d, %+v", code, c)
	}
}

func findCheck(checks []doctorCheck, prefix string) doctorCheck {
	for _, c := range checks {
		if strings.HasPrefix(c.Check, prefix) {
			return c
		}
	}
	return doctorCheck{}
}

func b64(data []byte) string {
	return base64.StdEncoding.EncodeToString(data)
}

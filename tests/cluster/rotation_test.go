package kit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// kubeletClientPEM is a client certificate and key for node from the kit's CA (its own
// program, `regcred-kit cert`), as kubelet keeps them (one PEM file, certificate then
// key), valid from a minute ago for life; and the certificate's end (NotAfter).
func kubeletClientPEM(t *testing.T, node string, life time.Duration) ([]byte, time.Time) {
	t.Helper()
	dir := t.TempDir()
	cert, err := kit.Cert(context.Background(), dir, "client", "--cn", "system:node:"+node,
		"--org", "system:nodes", "--valid-for", strconv.Itoa(int(life.Seconds())))
	if err != nil {
		t.Fatal(err)
	}
	var both []byte
	for _, name := range []string{"client.crt", "client.key"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		both = append(both, data...)
	}
	return both, cert.NotAfter
}

// rotateKubeletClient does what kubelet's certificate manager does: writes
// kubelet-client-STAMP.pem and turns kubelet-client-current.pem to it, by rename.
func rotateKubeletClient(t *testing.T, dir string, pemBytes []byte) {
	t.Helper()
	name := fmt.Sprintf("kubelet-client-%d.pem", time.Now().UnixNano())
	if err := os.WriteFile(filepath.Join(dir, name), pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "kubelet-client-current.pem.tmp")
	_ = os.Remove(link)
	if err := os.Symlink(name, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(link, filepath.Join(dir, "kubelet-client-current.pem")); err != nil {
		t.Fatal(err)
	}
}

// The node agent reads the pod's Secrets with the kubelet's own credentials. kubelet
// rotates its client certificate; the agent must follow it, or once the first
// certificate expires every read is refused and pods pull without their Secrets
// (issue 23, finding 8).
func TestKubeletClientCertificateRotation(t *testing.T) {
	ctx := context2(t, 4*time.Minute)
	node := kit.Node()
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	if err := os.Mkdir(pki, 0o700); err != nil {
		t.Fatal(err)
	}
	// The first certificate lives long enough for one pod to start with it.
	const firstLife = 30 * time.Second
	first, expires := kubeletClientPEM(t, node, firstLife)
	rotateKubeletClient(t, pki, first)
	current := filepath.Join(pki, "kubelet-client-current.pem")
	kubeconfig := filepath.Join(dir, "kubelet.kubeconfig")
	config := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kit
  cluster: {server: %q, certificate-authority: %q}
users:
- name: node
  user: {client-certificate: %q, client-key: %q}
contexts:
- name: node
  context: {cluster: kit, user: node}
current-context: node
`, kit.Desc.APIServer, kit.Desc.CA.Cert, current, current)
	if err := os.WriteFile(kubeconfig, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	restartProxy(t, ctx, "--kubeconfig", kubeconfig)
	offset := proxyLogSize(t)

	basic := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"]
	start := func(ns string) {
		t.Helper()
		mustSecret(t, ctx, ns, "creds", map[string]string{"serverAddress": basic, "username": user(), "password": password()})
		pod := kit.PodSpec("hello", kit.Image("BASIC"), "creds")
		pod.Spec.NodeName = node
		runPod(t, ctx, ns, pod)
	}
	start(namespace(t, ctx))
	if time.Now().After(expires) {
		t.Fatalf("the first pod took longer than the first certificate's %v life; the test proves nothing", firstLife)
	}
	// Nothing changed yet: the agent has not rebuilt its client (it once did at its first
	// look at the files, comparing the kubeconfig alone with the kubeconfig and its
	// certificate).
	if logged := proxyLogSince(t, offset); strings.Contains(logged, "the Kubernetes client was rebuilt") {
		t.Errorf("the agent rebuilt its client before anything changed:\n%s", logged)
	}

	// kubelet rotates; then the first certificate expires.
	second, _ := kubeletClientPEM(t, node, time.Hour)
	rotateKubeletClient(t, pki, second)
	time.Sleep(time.Until(expires) + 2*time.Second)

	// A pod in a new namespace: nothing cached, so its Secrets are read now.
	start(namespace(t, ctx))
	logged := proxyLogSince(t, offset)
	if !strings.Contains(logged, "the Kubernetes client was rebuilt") {
		t.Errorf("the agent did not log that it rebuilt its client:\n%s", logged)
	}
}

package kit

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
)

// The name the test gives regcred's image (scripts/image --name) and the overlay sets.
const (
	deployImageName = "regcred.local/regcred"
	deployImageTag  = "kit"
	deployNamespace = "regcred-system"
	// Where the DaemonSet's proxy listens on the node (its hostPath).
	daemonSetSocket = "/run/regcred/cri-proxy.sock"
)

// kitProfile is the Cargo profile the kit runs.
func kitProfile() string { return kit.Desc.Profile }

// servingPair is a serving certificate for dnsNames signed by ca, as PEM.
func (ca *testCA) servingPair(t testing.TB, dnsNames ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: dnsNames[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames:    dnsNames,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// copyTree copies the regular files and directories under from to to.
func copyTree(t testing.TB, from, to string) {
	t.Helper()
	err := filepath.Walk(from, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		target := filepath.Join(to, rel)
		if info.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// regcredPods describes every pod in regcred-system, for failure messages.
func regcredPods(ctx context.Context) string {
	pods, err := kit.Client.CoreV1().Pods(deployNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for i := range pods.Items {
		p := &pods.Items[i]
		fmt.Fprintf(&b, "\npod %s: %s", p.Name, kit.Describe(deployNamespace, p.Name, p))
	}
	return b.String()
}

// webhookReviews sums regcred_webhook_reviews_total over the webhook pods, read from
// each pod's metrics port (the pod IPs are on the kit's bridge, reachable from here).
func webhookReviews(t *testing.T, ctx context.Context) int {
	t.Helper()
	pods, err := kit.Client.CoreV1().Pods(deployNamespace).List(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=regcred-webhook",
	})
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, p := range pods.Items {
		if p.Status.PodIP == "" || p.DeletionTimestamp != nil {
			continue
		}
		resp, err := http.Get("http://" + net.JoinHostPort(p.Status.PodIP, "9090") + "/metrics")
		if err != nil {
			t.Fatalf("the metrics of webhook pod %s: %v", p.Name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, m := range regexp.MustCompile(`(?m)^regcred_webhook_reviews_total\{[^}]*\} (\d+)$`).FindAllStringSubmatch(string(body), -1) {
			n, _ := strconv.Atoi(m[1])
			total += n
		}
	}
	return total
}

// The restore step of the cleanup: what `scripts/cluster up` applies from deploy/ (the
// namespace, the proxy's ServiceAccount, the opt-in RBAC and NRI mode's admission
// policy), with the same commands, so the tests after this one find the kit as it came up.
func restoreKitRBAC(ctx context.Context) (string, error) {
	out, err := kubectl(ctx, nil, nil, "apply",
		"-f", filepath.Join("..", "..", "deploy", "namespace.yaml"),
		"-f", filepath.Join("..", "..", "deploy", "cri-proxy", "rbac.yaml"),
		"-f", filepath.Join("..", "..", "deploy", "cri-proxy", "namespaced", "rbac.yaml"))
	if err != nil {
		return out, err
	}
	more, err := kubectl(ctx, nil, nil, "apply", "--server-side", "--force-conflicts",
		"-k", filepath.Join("..", "..", "deploy", "admission"))
	return out + more, err
}

// deploy/ applied on the kit from regcred's own image: scripts/image builds the image,
// `ctr images push` puts it into the kit's public registry, and `kubectl apply
// --server-side -k` of an overlay that sets the image applies every object with no
// warning. Without cert-manager (an opt-in component), the serving certificate Secret
// and the caBundle are provided as deploy/webhook/README.md says. The webhook
// Deployment's two pods become Ready on the real kubelet, the API server calls them
// through the Service (endpoint routing, `--enable-aggregator-routing`) and refuses a
// bad example with their verdict, a good one is created; the cri-proxy DaemonSet's pod
// runs with its hostPath socket. Everything is deleted after, and the kit's own
// objects from deploy/ are put back as `up` made them.
func TestDeployOnTheKit(t *testing.T) {
	ctx := context2(t, 8*time.Minute)
	top := mustAbs(t, filepath.Join("..", ".."))
	tmp := t.TempDir()

	// 1. The image, from the binary the kit runs.
	archive := filepath.Join(tmp, "regcred-oci.tar")
	started := time.Now()
	out, err := exec.CommandContext(ctx, filepath.Join(top, "scripts", "image"), "--profile", kitProfile(),
		"--out", archive, "--name", deployImageName+":"+deployImageTag).CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/image: %v\n%s", err, out)
	}
	digest := func(kind string) string {
		m := regexp.MustCompile(`(?m)^` + kind + ` +(sha256:[0-9a-f]{64})$`).FindStringSubmatch(string(out))
		if m == nil {
			t.Fatalf("scripts/image printed no %s digest:\n%s", kind, out)
		}
		return m[1]
	}
	manifestDigest, configDigest := digest("manifest"), digest("config")
	t.Logf("scripts/image (%s) in %s: manifest %s", kitProfile(), time.Since(started).Round(time.Millisecond), manifestDigest)

	// Into the kit's public registry, as a public image is served: kubelet pulls it on
	// whichever node a pod lands, through regcred's agent, which records it as public.
	// (Imported into a node's containerd by hand it would be an image that came without
	// a pull regcred recorded, which regcred counts as private: issue 23, finding 5.)
	// ctr pushes from a namespace of its own, which the CRI (namespace k8s.io) never sees.
	image := kit.Env["REGCRED_CLUSTER_PUBLIC_REGISTRY"] + "/regcred:" + deployImageTag
	pushArgs := []string{"--address", kit.Desc.Nodes[0].ContainerdSocket, "-n", "regcred-deploy-test"}
	for _, step := range [][]string{
		{"images", "import", archive},
		{"images", "tag", "--force", deployImageName + ":" + deployImageTag, image},
		{"images", "push", "--plain-http", image},
	} {
		if out, err := exec.CommandContext(ctx, kit.Ctr(), append(pushArgs, step...)...).CombinedOutput(); err != nil {
			t.Fatalf("ctr %s: %v\n%s", strings.Join(step, " "), err, out)
		}
	}
	t.Cleanup(func() {
		_ = exec.Command(kit.Ctr(), append(pushArgs, "images", "rm", deployImageName+":"+deployImageTag, image)...).Run()
		for i := range kit.Nodes() {
			_ = exec.Command(kit.Ctr(), "--address", kit.Desc.Nodes[i].ContainerdSocket, "-n", "k8s.io", "images", "rm", image).Run()
		}
	})

	// 2. The overlay: deploy/ as it is (a copy beside it: kustomize takes relative paths
	// only), the image set, and deploy/'s own opt-in component cri-proxy/namespaced.
	// That component is the one thing besides the image: the default proxy mounts the
	// kubelet's kubeconfig from kubeadm's paths (/etc/kubernetes/kubelet.conf,
	// /var/lib/kubelet/pki), which the kit's kubelet does not use, so the pod could not
	// start; the component runs the proxy as its ServiceAccount instead.
	overlay := filepath.Join(tmp, "overlay")
	copyTree(t, filepath.Join(top, "deploy"), filepath.Join(overlay, "deploy"))
	kustomization := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [deploy]
components: [deploy/cri-proxy/namespaced]
images:
  - name: registry.example.com/regcred
    newName: %s
    newTag: %s
`, strings.TrimSuffix(image, ":"+deployImageTag), deployImageTag)
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(kustomization), 0o644); err != nil {
		t.Fatal(err)
	}

	// Cleanup, registered before anything is applied: the webhook configuration first
	// (its failurePolicy Fail would refuse every later regcredentials Secret), then every
	// object of the overlay (namespace included, waiting until it is gone), then the
	// kit's own objects from deploy/ again and the node's label.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := kit.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(ctx, "regcred-webhook", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting the webhook configuration: %v", err)
		}
		if out, err := kubectl(ctx, nil, nil, "delete", "-k", overlay, "--ignore-not-found", "--wait=true", "--timeout=150s"); err != nil {
			t.Errorf("kubectl delete -k: %v\n%s", err, out)
		}
		if out, err := restoreKitRBAC(ctx); err != nil {
			t.Errorf("restoring the kit's objects from deploy/: %v\n%s", err, out)
		}
		patch := []byte(`{"metadata":{"labels":{"regcred.io/cri-proxy":null}}}`)
		if _, err := kit.Client.CoreV1().Nodes().Patch(ctx, kit.Node(), types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Errorf("unlabelling the node: %v", err)
		}
		if _, err := os.Stat(daemonSetSocket); err == nil {
			t.Errorf("%s is still there after the DaemonSet's pod went", daemonSetSocket)
		}
		_ = os.Remove(filepath.Dir(daemonSetSocket))
	})

	// 3. The serving certificate without cert-manager (deploy/webhook/README.md):
	// the Secret before the apply, the caBundle after. The kit's `up` made the
	// namespace and the proxy's ServiceAccount with client-side apply; that account is
	// deleted first so that server-side apply owns it whole (the component changes its
	// automountServiceAccountToken, which would otherwise conflict with the client-side
	// owner). The cleanup puts it back.
	if err := kit.Client.CoreV1().ServiceAccounts(deployNamespace).Delete(ctx, "regcred-cri-proxy", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	ca := newCA(t)
	certPEM, keyPEM := ca.servingPair(t, "regcred-webhook.regcred-system.svc", "regcred-webhook.regcred-system.svc.cluster.local")
	if _, err := kit.Client.CoreV1().Secrets(deployNamespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "regcred-webhook-tls"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The proxy runs on nodes that opt in (README's rollout, step 3.1).
	patch := []byte(`{"metadata":{"labels":{"regcred.io/cri-proxy":"true"}}}`)
	if _, err := kit.Client.CoreV1().Nodes().Patch(ctx, kit.Node(), types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}

	// 4. Server-side apply: the API server's own validation of every object, no warning.
	applied, err := kubectl(ctx, nil, nil, "apply", "--server-side", "-k", overlay)
	t.Logf("kubectl apply --server-side -k overlay:\n%s", applied)
	if err != nil {
		t.Fatalf("kubectl apply --server-side -k: %v\n%s", err, applied)
	}
	if regexp.MustCompile(`(?i)warning`).MatchString(applied) {
		t.Errorf("kubectl apply printed a warning:\n%s", applied)
	}
	for _, want := range []string{"deployment.apps/regcred-webhook serverside-applied",
		"daemonset.apps/regcred-cri-proxy serverside-applied",
		"validatingwebhookconfiguration.admissionregistration.k8s.io/regcred-webhook serverside-applied"} {
		if !strings.Contains(applied, want) {
			t.Errorf("kubectl apply did not say %q", want)
		}
	}
	caPatch := fmt.Sprintf(`[{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "%s"}]`, base64.StdEncoding.EncodeToString(ca.pem))
	if out, err := kubectl(ctx, nil, nil, "patch", "validatingwebhookconfiguration", "regcred-webhook", "--type", "json", "-p", caPatch); err != nil {
		t.Fatalf("setting the caBundle: %v\n%s", err, out)
	}

	// 5. The webhook's pods Ready on the real kubelet, running the pushed image.
	var deployment *appsv1.Deployment
	err = wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		d, err := kit.Client.AppsV1().Deployments(deployNamespace).Get(ctx, "regcred-webhook", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		deployment = d
		return d.Status.ReadyReplicas == *d.Spec.Replicas && d.Status.UpdatedReplicas == *d.Spec.Replicas, nil
	})
	if err != nil {
		t.Fatalf("the webhook Deployment is not Ready (%+v):%s", deployment.Status, regcredPods(ctx))
	}
	pods, err := kit.Client.CoreV1().Pods(deployNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=regcred-webhook"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		c := p.Status.ContainerStatuses[0]
		if c.Image != image || !strings.Contains(c.ImageID, strings.TrimPrefix(configDigest, "sha256:")) && !strings.Contains(c.ImageID, strings.TrimPrefix(manifestDigest, "sha256:")) {
			t.Errorf("pod %s runs %s (%s), not the pushed image (config %s)", p.Name, c.Image, c.ImageID, configDigest)
		}
		if !slices.Contains(kit.Nodes(), p.Spec.NodeName) {
			t.Errorf("pod %s on node %q, not one of the kit's %v", p.Name, p.Spec.NodeName, kit.Nodes())
		}
	}
	t.Logf("webhook Deployment Ready: %d pods, image %s", len(pods.Items), pods.Items[0].Status.ContainerStatuses[0].ImageID)

	// 6. The API server calls the pods through the Service: a bad example is refused
	// with the webhook's verdict (the pods' review counters rise), a good one created.
	ns := namespace(t, ctx)
	inNamespace := func(path string) []byte {
		data, err := os.ReadFile(filepath.Join(top, path))
		if err != nil {
			t.Fatal(err)
		}
		return []byte(strings.Replace(string(data), "namespace: apps", "namespace: "+ns, 1))
	}
	bad := "examples/bad/username-with-colon.yaml"
	field, _ := expectation(t, filepath.Join(top, bad))
	want := "is invalid: " + strings.Replace(field, "stringData[", "data[", 1) + ": "
	var refused string
	// The configuration's caBundle and the endpoints reach the API server within seconds.
	err = wait.PollUntilContextTimeout(ctx, time.Second, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		seen := webhookReviews(t, ctx)
		out, err := kubectl(ctx, inNamespace(bad), nil, "apply", "-f", "-")
		refused = out
		if err == nil {
			t.Fatalf("%s was created, want refused:\n%s", bad, out)
		}
		return strings.Contains(out, want) && webhookReviews(t, ctx) > seen, nil
	})
	if err != nil {
		t.Fatalf("%s: no refusal naming %q by the in-cluster webhook; last kubectl output:\n%s", bad, want, refused)
	}
	t.Logf("kubectl apply -f %s:\n%s", bad, refused)
	seen := webhookReviews(t, ctx)
	if out, err := kubectl(ctx, inNamespace("examples/regcredentials-stringdata.yaml"), nil, "apply", "-f", "-"); err != nil {
		t.Errorf("a valid example was refused: %v\n%s", err, out)
	}
	if webhookReviews(t, ctx) <= seen {
		t.Errorf("the valid example was created without a review by the in-cluster webhook")
	}

	// 7. The proxy's DaemonSet pod runs on the node, listening on its hostPath socket.
	err = wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		d, err := kit.Client.AppsV1().DaemonSets(deployNamespace).Get(ctx, "regcred-cri-proxy", metav1.GetOptions{})
		return err == nil && d.Status.DesiredNumberScheduled == 1 && d.Status.NumberReady == 1, nil
	})
	if err != nil {
		t.Fatalf("the cri-proxy DaemonSet's pod is not Ready:%s", regcredPods(ctx))
	}
	info, err := os.Stat(daemonSetSocket)
	if err != nil || info.Mode()&os.ModeSocket == 0 {
		t.Fatalf("the DaemonSet's proxy has no socket at %s on the node: %v", daemonSetSocket, err)
	}
	conn, err := net.Dial("unix", daemonSetSocket)
	if err != nil {
		t.Fatalf("connecting to %s: %v", daemonSetSocket, err)
	}
	conn.Close()
	t.Logf("cri-proxy DaemonSet Ready, socket %s accepts connections", daemonSetSocket)
}

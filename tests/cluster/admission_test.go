package kit

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
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
	"strconv"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// The `regcred` binary the kit runs (target/PROFILE/regcred, the profile the kit
// remembers).
func regcredBinary(t *testing.T) string {
	t.Helper()
	profile := "release"
	if p, err := os.ReadFile(filepath.Join(kit.Dir, "kit-profile")); err == nil {
		profile = strings.TrimSpace(string(p))
	}
	dir := map[string]string{"dev": "debug", "release": "release"}[profile]
	bin, err := filepath.Abs(filepath.Join("..", "..", "target", dir, "regcred"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("the regcred binary: %v", err)
	}
	return bin
}

// A CA and a serving certificate for 127.0.0.1, written as tls.crt and tls.key in dir;
// returns the CA's PEM (the webhook configuration's caBundle).
func servingCert(t *testing.T, dir string) []byte {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "regcred-kit-webhook-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "regcred-webhook"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	write := func(name, kind string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("tls.crt", "CERTIFICATE", leafDER)
	write("tls.key", "PRIVATE KEY", keyDER)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
}

func mustAbs(t *testing.T, path string) string {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// webhookProcess is `regcred webhook` on loopback, stopped by PID.
type webhookProcess struct {
	cmd               *exec.Cmd
	port, metricsPort int
	dir, log, bin     string
	policyConfig      string
	stopped           bool
	caPEM             []byte
	client            *http.Client
}

func startWebhook(t *testing.T, w *webhookProcess) {
	t.Helper()
	logFile, err := os.OpenFile(w.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	w.cmd = exec.Command(w.bin, "webhook",
		"--tls-cert", filepath.Join(w.dir, "tls.crt"), "--tls-key", filepath.Join(w.dir, "tls.key"),
		"--addr", "127.0.0.1:"+strconv.Itoa(w.port), "--metrics-addr", "127.0.0.1:"+strconv.Itoa(w.metricsPort),
		"--log-format", "json", "--policy-config", w.policyConfig)
	w.cmd.Stdout, w.cmd.Stderr = logFile, logFile
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logFile.Close()
	w.stopped = false
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := w.client.Get(fmt.Sprintf("https://127.0.0.1:%d/healthz", w.port))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("regcred webhook did not serve /healthz: %v (log %s)", err, w.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (w *webhookProcess) stop() {
	if w.stopped || w.cmd == nil || w.cmd.Process == nil {
		return
	}
	_ = w.cmd.Process.Kill()
	_, _ = w.cmd.Process.Wait()
	w.stopped = true
}

// reviews is the webhook's count of answered reviews (every outcome).
func (w *webhookProcess) reviews(t *testing.T) int {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", w.metricsPort))
	if err != nil {
		t.Fatalf("the webhook's metrics: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	total := 0
	for _, m := range regexp.MustCompile(`(?m)^regcred_webhook_reviews_total\{[^}]*\} (\d+)$`).FindAllStringSubmatch(string(body), -1) {
		n, _ := strconv.Atoi(m[1])
		total += n
	}
	return total
}

// kubectl runs the kit's kubectl as cluster admin with stdin; returns its combined output.
// (kubectl takes no flag before a plugin's name, so the kubeconfig comes from KUBECONFIG.)
func kubectl(ctx context.Context, stdin []byte, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, kit.Env["REGCRED_CLUSTER_KUBECTL"], args...)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Env = append(append(os.Environ(), "KUBECONFIG="+kit.Env["REGCRED_CLUSTER_KUBECONFIG"]), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// The `# expect: FIELD TYPE` header of an example in examples/bad.
func expectation(t *testing.T, path string) (field, errorType string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^# expect: (\S+) (\S+)`).FindStringSubmatch(string(data))
	if m == nil {
		t.Fatalf("%s has no `# expect: FIELD TYPE` header", path)
	}
	return m[1], m[2]
}

// The webhook registered with kube-apiserver as deploy/ ships it (rules,
// matchConditions, failurePolicy, timeout), reached by URL with its CA bundle: every
// file of examples/bad is refused with kubectl naming the field, every valid example is
// created, a warning reaches kubectl, other Secrets and ConfigMaps never reach the
// webhook, and with the webhook down regcredentials Secrets are refused (Fail) while
// others are not, until it serves again.
func TestWebhookBehindTheAPIServer(t *testing.T) {
	ctx := context2(t, 5*time.Minute)
	dir := t.TempDir()
	caPEM := servingCert(t, dir)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	w := &webhookProcess{
		port: freePort(t), metricsPort: freePort(t), dir: dir, bin: regcredBinary(t),
		log: filepath.Join(dir, "webhook.log"), caPEM: caPEM,
		// The examples' policy (allowedRegistries), as deploy/ mounts one from a ConfigMap.
		policyConfig: mustAbs(t, filepath.Join("..", "..", "examples", "policy-config.yaml")),
		client:       &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
	}
	startWebhook(t, w)
	t.Cleanup(w.stop)

	// deploy/'s configuration, pointed at this process.
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "webhook", "validatingwebhookconfiguration.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var config admissionregistrationv1.ValidatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(raw, &config); err != nil {
		t.Fatalf("deploy/webhook/validatingwebhookconfiguration.yaml: %v", err)
	}
	config.Name = "regcred-kit-" + RandomSuffix()
	url := fmt.Sprintf("https://127.0.0.1:%d%s", w.port, *config.Webhooks[0].ClientConfig.Service.Path)
	config.Webhooks[0].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caPEM}
	if _, err := kit.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, &config, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kit.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(context.Background(), config.Name, metav1.DeleteOptions{})
	})

	// The examples name namespace apps.
	if _, err := kit.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() { kit.DeleteNamespace("apps") })

	// The API server picks a new configuration up within a few seconds.
	probe := []byte("apiVersion: v1\nkind: Secret\nmetadata: {name: probe, namespace: apps}\ntype: kubernetes.io/regcredentials\nstringData: {serverAddress: 'https://registry.corp.example', username: u}\n")
	for deadline := time.Now().Add(30 * time.Second); ; {
		seen := w.reviews(t)
		out, err := kubectl(ctx, probe, nil, "create", "--dry-run=server", "-f", "-")
		if err != nil && w.reviews(t) > seen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the webhook configuration never took effect: %v %s", err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}

	bad, _ := filepath.Glob(filepath.Join("..", "..", "examples", "bad", "*.yaml"))
	if len(bad) == 0 {
		t.Fatal("no examples/bad/*.yaml")
	}
	byWebhook := 0
	for _, path := range bad {
		field, _ := expectation(t, path)
		data, _ := os.ReadFile(path)
		seen := w.reviews(t)
		out, err := kubectl(ctx, data, nil, "apply", "-f", "-")
		reached := w.reviews(t) > seen
		if !bytes.Contains(data, []byte("type: kubernetes.io/regcredentials")) {
			// deploy/'s matchConditions send regcredentials Secrets only (Docker Secrets
			// with --check-docker-secrets and a wider condition): created, never sent.
			if err != nil || reached {
				t.Errorf("%s (not regcredentials): want created without a review, got %v, reviewed %v:\n%s", filepath.Base(path), err, reached, out)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: created, want refused:\n%s", filepath.Base(path), out)
			continue
		}
		if reached {
			// The webhook's answer, as kubectl prints it: `The Secret "NAME" is invalid:
			// FIELD: rule`. The API server has already folded stringData into data, so
			// the path the webhook names is data[KEY] where the file wrote stringData.
			byWebhook++
			want := strings.Replace(field, "stringData[", "data[", 1)
			if !strings.Contains(out, "is invalid: "+want+": ") {
				t.Errorf("%s: kubectl's message does not name %s:\n%s", filepath.Base(path), want, out)
			}
		} else {
			// Refused by the API server before any admission webhook (kubectl's strict
			// decoding, base64 of data, the name's grammar): its own message, logged.
			t.Logf("%s: refused before the webhook: %s", filepath.Base(path), strings.TrimSpace(out))
		}
	}
	if byWebhook < len(bad)/2 {
		t.Errorf("only %d of %d bad examples reached the webhook", byWebhook, len(bad))
	}
	t.Logf("%d of %d bad examples refused by the webhook, the rest by the API server itself", byWebhook, len(bad))

	good, _ := filepath.Glob(filepath.Join("..", "..", "examples", "*.yaml"))
	for _, path := range good {
		if strings.HasSuffix(path, "policy-config.yaml") {
			continue
		}
		data, _ := os.ReadFile(path)
		if out, err := kubectl(ctx, data, nil, "apply", "-f", "-"); err != nil {
			t.Errorf("%s: refused: %v\n%s", filepath.Base(path), err, out)
		}
	}

	// A warning (an identity token alone: CRI-O would ignore it) reaches kubectl.
	warned := []byte("apiVersion: v1\nkind: Secret\nmetadata: {name: warned, namespace: apps}\ntype: kubernetes.io/regcredentials\nstringData: {serverAddress: 'https://registry.corp.example', identityToken: t0ken}\n")
	out, err := kubectl(ctx, warned, nil, "apply", "-f", "-")
	if err != nil || !regexp.MustCompile(`(?m)^Warning: .*identityToken`).MatchString(out) {
		t.Errorf("an identity-token-only Secret: want created with a Warning line naming identityToken, got %v:\n%s", err, out)
	}

	// Other Secrets and ConfigMaps are never sent.
	before := w.reviews(t)
	for i, object := range []string{
		"apiVersion: v1\nkind: Secret\nmetadata: {name: opaque, namespace: apps}\ntype: Opaque\nstringData: {a: b}\n",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config, namespace: apps}\ndata: {a: b}\n",
	} {
		if out, err := kubectl(ctx, []byte(object), nil, "apply", "-f", "-"); err != nil {
			t.Fatalf("object %d: %v\n%s", i, err, out)
		}
	}
	if after := w.reviews(t); after != before {
		t.Errorf("an Opaque Secret and a ConfigMap reached the webhook: reviews %d -> %d", before, after)
	}

	// Down: regcredentials Secrets refused (failurePolicy Fail), others created.
	w.stop()
	down := []byte("apiVersion: v1\nkind: Secret\nmetadata: {name: while-down, namespace: apps}\ntype: kubernetes.io/regcredentials\nstringData: {serverAddress: 'https://registry.corp.example', username: u, password: p4ss}\n")
	if out, err := kubectl(ctx, down, nil, "apply", "-f", "-"); err == nil || !strings.Contains(out, "failed calling webhook") {
		t.Errorf("with the webhook down: want refused (failed calling webhook), got %v:\n%s", err, out)
	}
	if out, err := kubectl(ctx, []byte("apiVersion: v1\nkind: Secret\nmetadata: {name: opaque-while-down, namespace: apps}\ntype: Opaque\nstringData: {a: b}\n"), nil, "apply", "-f", "-"); err != nil {
		t.Errorf("an Opaque Secret with the webhook down: %v\n%s", err, out)
	}
	// Back: the same configuration works again.
	startWebhook(t, w)
	if out, err := kubectl(ctx, down, nil, "apply", "-f", "-"); err != nil {
		t.Errorf("after the webhook restarted: %v\n%s", err, out)
	}
	addCanary("p4ss", "t0ken")
}

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

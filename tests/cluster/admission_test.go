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
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

// The `regcred` binary the kit runs (target/PROFILE/regcred, the profile the kit
// remembers).
func regcredBinary(t testing.TB) string {
	t.Helper()
	dir := map[string]string{"dev": "debug", "release": "release"}[kit.Desc.Profile]
	bin, err := filepath.Abs(filepath.Join("..", "..", "target", dir, "regcred"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("the regcred binary: %v", err)
	}
	return bin
}

// testCA signs the webhook's serving certificates; its PEM is the configuration's
// caBundle, so a renewed leaf needs no change there (as cert-manager renews).
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t testing.TB) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	template := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "regcred-kit-webhook-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue writes a serving certificate for 127.0.0.1 with this serial as tls.crt and
// tls.key in dir (each file replaced whole, by rename).
func (ca *testCA) issue(t testing.TB, dir string, serial int64) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "regcred-webhook"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	write := func(name, kind string, der []byte) {
		tmp := filepath.Join(dir, "."+name)
		if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	write("tls.key", "PRIVATE KEY", keyDER)
	write("tls.crt", "CERTIFICATE", leafDER)
}

// servedSerial is the serial number of the certificate the webhook presents now.
func (w *webhookProcess) servedSerial(t testing.TB) int64 {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(w.caPEM)
	conn, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(w.port), &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatalf("TLS to the webhook: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

func mustAbs(t testing.TB, path string) string {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

func freePort(t testing.TB) int {
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
	// configuration is the ValidatingWebhookConfiguration registerWebhook made for it.
	configuration string
}

func startWebhook(t testing.TB, w *webhookProcess) {
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
func (w *webhookProcess) reviews(t testing.TB) int {
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

// registerWebhook starts `regcred webhook` (a serving certificate from ca, the examples'
// policy) and registers it with the chart's ValidatingWebhookConfiguration by URL, waiting
// until the API server calls it; both are undone at cleanup.
func registerWebhook(tb testing.TB, ctx context.Context) (w *webhookProcess, ca *testCA, dir string) {
	tb.Helper()
	dir = tb.TempDir()
	ca = newCA(tb)
	ca.issue(tb, dir, 2)
	caPEM := ca.pem
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	w = &webhookProcess{
		port: freePort(tb), metricsPort: freePort(tb), dir: dir, bin: regcredBinary(tb),
		log: filepath.Join(dir, "webhook.log"), caPEM: caPEM,
		// The examples' policy (allowedRegistries), as the chart mounts one from a ConfigMap.
		policyConfig: mustAbs(tb, filepath.Join("..", "..", "examples", "policy-config.yaml")),
		client:       &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
	}
	startWebhook(tb, w)
	tb.Cleanup(w.stop)

	// The chart's configuration, pointed at this process.
	raw, err := exec.CommandContext(ctx, kit.Desc.Binaries.Helm, "template", "regcred", filepath.Join("..", "..", "deploy", "chart"),
		"--namespace", deployNamespace, "--kube-version", kit.Desc.Kubernetes,
		"--show-only", "templates/webhook/validatingwebhookconfiguration.yaml").Output()
	if err != nil {
		tb.Fatalf("helm template deploy/chart: %v", err)
	}
	var config admissionregistrationv1.ValidatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(raw, &config); err != nil {
		tb.Fatalf("deploy/chart's ValidatingWebhookConfiguration: %v\n%s", err, raw)
	}
	config.Name = "regcred-kit-" + RandomSuffix()
	w.configuration = config.Name
	url := fmt.Sprintf("https://127.0.0.1:%d%s", w.port, *config.Webhooks[0].ClientConfig.Service.Path)
	config.Webhooks[0].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caPEM}
	if _, err := kit.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, &config, metav1.CreateOptions{}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = kit.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(context.Background(), config.Name, metav1.DeleteOptions{})
	})

	// The API server picks a new configuration up within a few seconds.
	probe := []byte("apiVersion: v1\nkind: Secret\nmetadata: {name: probe, namespace: default}\ntype: kubernetes.io/regcredentials\nstringData: {serverAddress: 'https://registry.corp.example', username: u}\n")
	for deadline := time.Now().Add(30 * time.Second); ; {
		seen := w.reviews(tb)
		out, err := kubectl(ctx, probe, nil, "create", "--dry-run=server", "-f", "-")
		if err != nil && w.reviews(tb) > seen {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("the webhook configuration never took effect: %v %s", err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}

	return w, ca, dir
}

// The webhook registered with kube-apiserver as deploy/ ships it (rules,
// matchConditions, failurePolicy, timeout), reached by URL with its CA bundle: every
// file of examples/bad is refused with kubectl naming the field, every valid example is
// created, a warning reaches kubectl, other Secrets and ConfigMaps never reach the
// webhook, with the webhook down regcredentials Secrets are refused (Fail) while others
// are not, until it serves again, and a rotated serving certificate is used without a
// restart.
func TestWebhookBehindTheAPIServer(t *testing.T) {
	ctx := context2(t, 5*time.Minute)
	w, ca, dir := registerWebhook(t, ctx)

	// The examples name namespace apps.
	if _, err := kit.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() { kit.DeleteNamespace("apps") })

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

	// Rotation with the API server as the client: new files from the same CA, picked up
	// without a restart, and creation keeps working.
	if got := w.servedSerial(t); got != 2 {
		t.Fatalf("serving serial %d, want 2", got)
	}
	ca.issue(t, dir, 3)
	for deadline := time.Now().Add(30 * time.Second); w.servedSerial(t) != 3; {
		if time.Now().After(deadline) {
			t.Fatal("the webhook still serves the old certificate 30 s after rotation")
		}
		time.Sleep(200 * time.Millisecond)
	}
	seen := w.reviews(t)
	rotated := bytes.Replace(down, []byte("while-down"), []byte("after-rotation"), 1)
	if out, err := kubectl(ctx, rotated, nil, "apply", "-f", "-"); err != nil || w.reviews(t) <= seen {
		t.Errorf("after rotating the certificate: %v, reviewed %v\n%s", err, w.reviews(t) > seen, out)
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

// BenchmarkAdmissionThroughTheAPIServer: 1,000 regcredentials Secrets (every second one
// invalid) created and deleted through the API server by 8 concurrent clients, first
// without the webhook registered, then with it, in one run: every verdict with the
// webhook is checked, and the API server's end-to-end create latency (p50, p99) of both
// phases is reported, the webhook's share of a create.
// Run with: go test -run '^$' -bench AdmissionThroughTheAPIServer -benchtime 1x (BENCHMARKS.md).
func BenchmarkAdmissionThroughTheAPIServer(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ns, err := kit.CreateNamespace(ctx, "bench-admission")
	if err != nil {
		b.Fatal(err)
	}
	defer kit.DeleteNamespace(ns)
	const secrets, clients = 1000, 8
	// A client without client-go's rate limiter: the latency is the API server's.
	config, err := clientcmd.BuildConfigFromFlags("", kit.Env["REGCRED_CLUSTER_KUBECONFIG"])
	if err != nil {
		b.Fatal(err)
	}
	config.QPS = -1
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		b.Fatal(err)
	}
	phase := func(name string, webhook bool) []time.Duration {
		latencies := make([]time.Duration, secrets)
		wrong := make(chan string, secrets)
		jobs := make(chan int)
		var wg sync.WaitGroup
		for c := 0; c < clients; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range jobs {
					data := map[string][]byte{"serverAddress": []byte("registry.corp.example"), "username": []byte("robot")}
					valid := i%2 == 0
					if valid {
						data["password"] = []byte("bench-" + strconv.Itoa(i))
					}
					secret := &corev1.Secret{
						ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", name, i)},
						Type:       "kubernetes.io/regcredentials", Data: data,
					}
					started := time.Now()
					_, err := client.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{})
					latencies[i] = time.Since(started)
					switch {
					case err == nil:
						if webhook && !valid {
							wrong <- secret.Name + ": invalid, created"
						}
						_ = client.CoreV1().Secrets(ns).Delete(ctx, secret.Name, metav1.DeleteOptions{})
					case webhook && !valid && apierrors.IsInvalid(err) && strings.Contains(err.Error(), "data[password]"):
					default:
						wrong <- fmt.Sprintf("%s (valid %v): %v", secret.Name, valid, err)
					}
				}
			}()
		}
		for i := 0; i < secrets; i++ {
			jobs <- i
		}
		close(jobs)
		wg.Wait()
		close(wrong)
		for w := range wrong {
			b.Errorf("%s: %s", name, w)
		}
		sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
		return latencies
	}
	for i := 0; i < b.N; i++ {
		without := phase(fmt.Sprintf("without-%d", i), false)
		w, _, _ := registerWebhook(b, ctx)
		before := w.reviews(b)
		with := phase(fmt.Sprintf("with-%d", i), true)
		if reviewed := w.reviews(b) - before; reviewed != secrets {
			b.Errorf("the webhook answered %d reviews for %d creates", reviewed, secrets)
		}
		w.stop()
		pct := func(d []time.Duration, p float64) float64 {
			return float64(d[int(float64(len(d)-1)*p)].Microseconds()) / 1000
		}
		b.ReportMetric(pct(without, 0.5), "without-p50-ms")
		b.ReportMetric(pct(without, 0.99), "without-p99-ms")
		b.ReportMetric(pct(with, 0.5), "with-p50-ms")
		b.ReportMetric(pct(with, 0.99), "with-p99-ms")
		b.ReportMetric(pct(with, 0.5)/pct(without, 0.5), "p50-with/without")
	}
}

// idleH2Client opens a TLS connection to the webhook from source and starts an HTTP/2
// client on it (which answers the server's pings, as any real client does) that sends
// no request; nil when the server did not let it in within two seconds.
func idleH2Client(w *webhookProcess, source string) io.Closer {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(w.caPEM)
	dialer := &net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	conn, err := tls.DialWithDialer(dialer, "tcp", "127.0.0.1:"+strconv.Itoa(w.port),
		&tls.Config{RootCAs: pool, NextProtos: []string{"h2"}})
	if err != nil {
		return nil
	}
	client, err := (&http2.Transport{}).NewClientConn(conn)
	if err != nil {
		conn.Close()
		return nil
	}
	return client
}

// 300 clients that open a TLS+HTTP/2 connection and then sit idle, from the API
// server's own address, cannot keep the API server out: its reviews go on within its
// timeout (issue 23, finding 6). Before the fix they held all 256 slots forever and the
// API server's new connection waited in the listen queue past its 5 s timeout.
func TestWebhookIdleClientsCannotHoldItsConnections(t *testing.T) {
	ctx := context2(t, 4*time.Minute)
	w, _, _ := registerWebhook(t, ctx)
	// A fresh process: the API server's connection to the old one is gone, it needs a
	// new one after the idle clients came.
	w.stop()
	startWebhook(t, w)

	var (
		idle []io.Closer
		mu   sync.Mutex
		wg   sync.WaitGroup
	)
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for i := 0; i < 300; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c := idleH2Client(w, "127.0.0.1"); c != nil {
				mu.Lock()
				idle = append(idle, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("%d of 300 idle clients connected", len(idle))

	ns := namespace(t, ctx)
	for i := 0; i < 10; i++ {
		secret := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("after-idle-%d", i), Namespace: ns},
			Type:       "kubernetes.io/regcredentials",
			StringData: map[string]string{"serverAddress": "https://registry.corp.example", "username": "u", "password": "p"},
		}
		started := time.Now()
		if _, err := kit.Client.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
			t.Fatalf("Secret %d with %d idle clients connected, after %v: %v", i, len(idle), time.Since(started), err)
		}
	}
	// And the webhook still decides: a broken one is refused by it, naming the field.
	broken := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "broken", Namespace: ns},
		Type:       "kubernetes.io/regcredentials",
		StringData: map[string]string{"username": "u", "password": "p"},
	}
	_, err := kit.Client.CoreV1().Secrets(ns).Create(ctx, broken, metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), "serverAddress") || strings.Contains(err.Error(), "failed calling webhook") {
		t.Fatalf("the broken Secret: want the webhook's refusal naming serverAddress, got %v", err)
	}
}

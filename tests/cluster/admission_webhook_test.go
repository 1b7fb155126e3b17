// `regcred webhook` on loopback for the admission tests (its CA and certificates, start,
// stop, review count, registration with the API server), and kubectl.

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
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

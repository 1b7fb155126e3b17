// `regcred webhook` on loopback for the admission tests (its CA and certificates, start,
// stop, review count, registration with the API server), and kubectl.

package kit

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
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
// caBundle, so a renewed leaf needs no change there (as cert-manager renews). Its files
// are in dir; the kit's program (`regcred-kit ca` and `cert`) writes them.
type testCA struct {
	dir string
	pem []byte
}

// newCA is a new CA that lives a day (doctor warns of its end; a second one is a caBundle
// the first one's certificates do not match), made by the kit's program as every
// certificate of the tests is.
func newCA(t testing.TB) *testCA {
	t.Helper()
	dir := t.TempDir()
	if err := kit.KitProgram(context.Background(), "ca", "--out", dir, "--cn", "regcred-kit-webhook-ca",
		"--valid-for", "86400"); err != nil {
		t.Fatal(err)
	}
	pemBytes, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{dir: dir, pem: pemBytes}
}

// issue writes a new serving certificate for 127.0.0.1 and localhost as tls.crt and
// tls.key in dir (each file replaced whole, by rename); returns its serial number.
func (ca *testCA) issue(t testing.TB, dir string) string {
	t.Helper()
	tmp := t.TempDir()
	cert, err := kit.Cert(context.Background(), tmp, "tls", "--ca-dir", ca.dir,
		"--cn", "regcred-webhook", "--server", "127.0.0.1,localhost")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tls.key", "tls.crt"} {
		if err := os.Rename(filepath.Join(tmp, name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return cert.SerialNumber.String()
}

// servedSerial is the serial number of the certificate the webhook presents now.
func (w *webhookProcess) servedSerial(t testing.TB) string {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(w.caPEM)
	conn, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(w.port), &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatalf("TLS to the webhook: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
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
	// serial is the serial number of the certificate registerWebhook issued it.
	serial string
	client *http.Client
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
	serial := ca.issue(tb, dir)
	caPEM := ca.pem
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	w = &webhookProcess{
		port: freePort(tb), metricsPort: freePort(tb), dir: dir, bin: regcredBinary(tb),
		log: filepath.Join(dir, "webhook.log"), caPEM: caPEM, serial: serial,
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

// The webhook behind the real API server: every example admitted or refused as it must
// be, and the API server's create latency with and without it (benchmark).

package kit

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

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
	if got := w.servedSerial(t); got != w.serial {
		t.Fatalf("serving serial %s, want %s", got, w.serial)
	}
	renewed := ca.issue(t, dir)
	if renewed == w.serial {
		t.Fatalf("the renewed certificate has the first one's serial %s", renewed)
	}
	for deadline := time.Now().Add(30 * time.Second); w.servedSerial(t) != renewed; {
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

// TestMain (the kit the tests run on), the canaries, and the helpers every test uses:
// namespaces, Secrets, pods, the proxy's log and metrics.

package kit

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// anonymousRefusal is what the runtime says when the Basic-auth registry refuses a pull
// without credentials: containerd 1.6 passes the registry's "401 Unauthorized" on;
// containerd 2.x answers the Basic challenge itself with "authorization failed: no basic
// auth credentials" and never shows the 401.
const anonymousRefusal = `401 Unauthorized|no basic auth credentials`

// How long a pod may take to run, or to show its pull failure.
const (
	runTimeout  = 120 * time.Second
	failTimeout = 90 * time.Second
)

var (
	kit *Kit
	// canaries are the secret values the tests handed to the cluster; none may appear in
	// an event, a pod status, or the kubelet's, proxy's or containerd's logs.
	canariesMu sync.Mutex
	canaries   []string
)

func addCanary(values ...string) {
	canariesMu.Lock()
	defer canariesMu.Unlock()
	canaries = append(canaries, values...)
}

// TestMain uses the kit named by REGCRED_CLUSTER_ENV (scripts/test brings it up and
// down); without it, it brings one up itself in target/cluster-gotest and stops it after.
func TestMain(m *testing.M) {
	script, err := filepath.Abs("../../scripts/cluster")
	if err != nil {
		panic(err)
	}
	envFile := os.Getenv(EnvFileVar)
	var down func()
	if envFile == "" {
		dir, _ := filepath.Abs("../../target/cluster-gotest")
		down = func() {
			out, err := (&Kit{Dir: dir, Script: script}).Cluster(context.Background(), "down")
			if err != nil {
				fmt.Fprintln(os.Stderr, out, err)
			}
		}
		signals := make(chan os.Signal, 1)
		signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
		go func() { <-signals; down(); os.Exit(130) }()
		fmt.Fprintf(os.Stderr, "%s is not set: bringing a kit up in %s\n", EnvFileVar, dir)
		if out, err := (&Kit{Dir: dir, Script: script}).Cluster(context.Background(), "up"); err != nil {
			fmt.Fprintln(os.Stderr, out)
			down()
			fmt.Fprintf(os.Stderr, "the kit did not come up: %v\n", err)
			os.Exit(1)
		}
		envFile = filepath.Join(dir, "cluster.env")
	}
	kit, err = Load(envFile, script)
	if err != nil {
		fmt.Fprintf(os.Stderr, "no usable kit: %v\n", err)
		if down != nil {
			down()
		}
		os.Exit(1)
	}
	addCanary(kit.Env["REGCRED_CLUSTER_BASIC_PASSWORD"], kit.Env["REGCRED_CLUSTER_REFRESH_TOKEN"],
		BasicAuth(kit.Env["REGCRED_CLUSTER_BASIC_USERNAME"], kit.Env["REGCRED_CLUSTER_BASIC_PASSWORD"]))
	code := m.Run()
	if down != nil {
		down()
	}
	os.Exit(code)
}

func context2(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func namespace(t *testing.T, ctx context.Context) string {
	t.Helper()
	prefix := regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(strings.ToLower(t.Name()), "-")
	if len(prefix) > 40 {
		prefix = prefix[len(prefix)-40:]
	}
	ns, err := kit.CreateNamespace(ctx, strings.Trim(prefix, "-"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			kit.DeleteNamespace(ns)
		}
	})
	return ns
}

func mustSecret(t *testing.T, ctx context.Context, ns, name string, data map[string]string) {
	t.Helper()
	if _, err := kit.CreateRegcredSecret(ctx, ns, name, data); err != nil {
		t.Fatalf("creating Secret %s/%s: %v", ns, name, err)
	}
}

func runPod(t *testing.T, ctx context.Context, ns string, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	if _, err := kit.CreatePod(ctx, ns, pod); err != nil {
		t.Fatal(err)
	}
	running, err := kit.WaitRunning(ctx, ns, pod.Name, runTimeout)
	if err != nil {
		t.Fatal(err)
	}
	return running
}

func failPod(t *testing.T, ctx context.Context, ns string, pod *corev1.Pod, patterns ...string) *corev1.Event {
	t.Helper()
	return failWith(t, ctx, ns, pod, kit.WaitPullFailure, patterns)
}

// failWith creates pod and waits with wait for its failure matching patterns.
func failWith(t *testing.T, ctx context.Context, ns string, pod *corev1.Pod,
	wait func(context.Context, string, string, time.Duration, ...*regexp.Regexp) (*corev1.Event, *corev1.Pod, error),
	patterns []string) *corev1.Event {
	t.Helper()
	if _, err := kit.CreatePod(ctx, ns, pod); err != nil {
		t.Fatal(err)
	}
	var res []*regexp.Regexp
	for _, p := range patterns {
		res = append(res, regexp.MustCompile(p))
	}
	event, last, err := wait(ctx, ns, pod.Name, failTimeout, res...)
	if err != nil {
		t.Fatal(err)
	}
	if last.Status.Phase == corev1.PodRunning {
		t.Fatalf("pod %s/%s is Running", ns, pod.Name)
	}
	return event
}

func user() string     { return kit.Env["REGCRED_CLUSTER_BASIC_USERNAME"] }
func password() string { return kit.Env["REGCRED_CLUSTER_BASIC_PASSWORD"] }

func wrongPassword() string {
	pw := "wrong-" + RandomSuffix() + RandomSuffix()
	addCanary(pw, BasicAuth(user(), pw))
	return pw
}

// proxyLogSince returns what the proxy logged after offset (the log's size before).
func proxyLogSince(t *testing.T, offset int64) string {
	t.Helper()
	data, err := os.ReadFile(kit.Env["REGCRED_CLUSTER_PROXY_LOG"])
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) < offset {
		return string(data)
	}
	return string(data[offset:])
}

func proxyLogSize(t *testing.T) int64 {
	info, err := os.Stat(kit.Env["REGCRED_CLUSTER_PROXY_LOG"])
	if err != nil {
		t.Fatal(err)
	}
	return info.Size()
}

func metrics(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + kit.FirstNode().ProxyMetrics + "/metrics")
	if err != nil {
		t.Fatalf("the proxy's metrics: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// The proxy's log lines (JSON) about one pod.
func proxyLines(log, ns, pod string) []map[string]any {
	var lines []map[string]any
	for _, line := range strings.Split(log, "\n") {
		var entry map[string]any
		if json.Unmarshal([]byte(line), &entry) != nil {
			continue
		}
		fields, _ := entry["fields"].(map[string]any)
		if fields == nil {
			fields = entry
		}
		// The field's value is the plain ns/name (it was Rust's Debug of an Option,
		// `Some("ns/name")`, before issue 25's logs a machine can read).
		if fields["pod"] == ns+"/"+pod {
			lines = append(lines, fields)
		}
	}
	return lines
}

func anyMessage(lines []map[string]any, message string) bool {
	for _, l := range lines {
		if fmt.Sprint(l["message"]) == message {
			return true
		}
	}
	return false
}

func metricValue(text, series string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return 0
}

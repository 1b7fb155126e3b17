package kit

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
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

// ---- serial: the proxy's credentials (these restart the proxy, so nothing else runs) ----

// The opt-in ServiceAccount mode the chart ships (node.apiCredentials=serviceAccount) is
// exactly enough: `get` on any pod, `get` on Secrets only in a namespace that applied
// its secrets-rolebinding.yaml, nothing more. (By default the proxy uses the kubelet's
// credentials instead: TestProxyWithNodeCredentials.)
func TestProxyRBACFromDeployIsExactlyEnough(t *testing.T) {
	ctx := context2(t, time.Minute)
	bound := namespace(t, ctx)
	unbound := namespace(t, ctx)
	binding := filepath.Join("..", "..", "deploy", "cri-proxy", "secrets-rolebinding.yaml")
	if out, err := exec.CommandContext(ctx, kit.Env["REGCRED_CLUSTER_KUBECTL"], "--kubeconfig", kit.Env["REGCRED_CLUSTER_KUBECONFIG"],
		"apply", "-n", bound, "-f", binding).CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply -n %s -f %s: %v\n%s", bound, binding, err, out)
	}
	sa := "system:serviceaccount:regcred-system:regcred-cri-proxy"
	cases := []struct {
		namespace, verb, resource string
		allowed                   bool
	}{
		{unbound, "get", "pods", true}, {bound, "get", "pods", true},
		{bound, "get", "secrets", true}, {unbound, "get", "secrets", false},
		{bound, "list", "secrets", false}, {bound, "watch", "secrets", false}, {unbound, "list", "pods", false},
		{bound, "create", "secrets", false}, {bound, "update", "secrets", false}, {unbound, "delete", "pods", false},
		{bound, "get", "configmaps", false}, {"", "get", "nodes", false},
		// The pods' Events (the agent's RegcredPullSecretSkipped, ...), nothing more.
		{unbound, "create", "events", true}, {unbound, "patch", "events", true},
		{unbound, "list", "events", false}, {unbound, "delete", "events", false},
	}
	for _, c := range cases {
		review, err := kit.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   sa,
				Groups: []string{"system:serviceaccounts", "system:serviceaccounts:regcred-system", "system:authenticated"},
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Namespace: c.namespace, Verb: c.verb, Resource: c.resource,
				},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if review.Status.Allowed != c.allowed {
			t.Errorf("%s %s %s in %q: allowed=%v, want %v (%s)", sa, c.verb, c.resource, c.namespace, review.Status.Allowed, c.allowed, review.Status.Reason)
		}
	}
}

// With deploy/'s Secret role bound in one namespace only, a pod there runs, and a pod
// whose Secret is in a namespace the proxy may not read fails with a message saying so.
func TestProxySecretInNamespaceItMayNotRead(t *testing.T) {
	ctx := context2(t, 5*time.Minute)
	allowed := namespace(t, ctx)
	denied := namespace(t, ctx)
	saName := "kit-narrow-" + RandomSuffix()
	sa, err := kit.Client.CoreV1().ServiceAccounts(allowed).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: saName},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: allowed}}
	// The chart's roles (node.apiCredentials=serviceAccount): pods everywhere (so the failure is
	// about the Secret), Secrets only in `allowed`.
	podsBinding := saName + "-pods"
	t.Cleanup(func() {
		_ = kit.Client.RbacV1().ClusterRoleBindings().Delete(context.Background(), podsBinding, metav1.DeleteOptions{})
	})
	if _, err := kit.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: podsBinding},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "regcred-cri-proxy-pods"},
		Subjects:   subject,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kit.Client.RbacV1().RoleBindings(allowed).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "regcred-cri-proxy-secrets"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "regcred-cri-proxy-secrets"},
		Subjects:   subject,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	token, err := kit.Client.CoreV1().ServiceAccounts(allowed).CreateToken(ctx, sa.Name, &authenticationToken, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	config := clientcmd.GetConfigFromFileOrDie(kit.Env["REGCRED_CLUSTER_KUBECONFIG"])
	for _, auth := range config.AuthInfos {
		auth.ClientCertificate, auth.ClientKey, auth.Token = "", "", token.Status.Token
	}
	kubeconfig := filepath.Join(t.TempDir(), "narrow.kubeconfig")
	if err := clientcmd.WriteToFile(*config, kubeconfig); err != nil {
		t.Fatal(err)
	}
	restartProxy(t, ctx, "--kubeconfig", kubeconfig)

	for _, ns := range []string{allowed, denied} {
		mustSecret(t, ctx, ns, "creds", map[string]string{
			"serverAddress": kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"], "username": user(), "password": password(),
		})
	}
	runPod(t, ctx, allowed, kit.PodSpec("readable", kit.Image("BASIC"), "creds"))
	event := failPod(t, ctx, denied, kit.PodSpec("unreadable", kit.Image("BASIC"), "creds"),
		anonymousRefusal, `regcred: pull secret\(s\) of pod `+denied+`/unreadable that could not be read, so not used: `+denied+`/creds: 403 Forbidden`,
		`secrets "creds" is forbidden`, `cannot get resource "secrets"`, `in the namespace "`+denied+`"`)
	t.Logf("the event: %s", event.Message)
}

var authenticationToken = authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}

func ptr[T any](v T) *T { return &v }

// The Node-authorizer mode: the proxy with the kubelet's own credentials pulls for pods on
// its node, and those credentials read only the Secrets such pods reference.
func TestProxyWithNodeCredentials(t *testing.T) {
	ctx := context2(t, 5*time.Minute)
	restartProxy(t, ctx, "node")
	ns := namespace(t, ctx)
	mustSecret(t, ctx, ns, "creds", map[string]string{
		"serverAddress": kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"], "username": user(), "password": password(),
	})
	mustSecret(t, ctx, ns, "unused", map[string]string{
		"serverAddress": kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"], "username": user(), "password": password(),
	})
	offset := proxyLogSize(t)
	runPod(t, ctx, ns, kit.PodSpec("node-mode", kit.Image("BASIC"), "creds"))
	if lines := proxyLines(proxyLogSince(t, offset), ns, "node-mode"); !anyMessage(lines, "PullImage with credentials from pull secret") {
		t.Fatalf("the proxy did not log a pull with the Secret for %s/node-mode: %v", ns, lines)
	}

	nodeConfig, err := clientcmd.BuildConfigFromFlags("", kit.FirstNode().KubeletKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	node := kubernetes.NewForConfigOrDie(nodeConfig)
	if _, err := node.CoreV1().Secrets(ns).Get(ctx, "creds", metav1.GetOptions{}); err != nil {
		t.Fatalf("the node cannot read the Secret of its own pod: %v", err)
	}
	_, err = node.CoreV1().Secrets(ns).Get(ctx, "unused", metav1.GetOptions{})
	if !IsForbidden(err) {
		t.Fatalf("the node read a Secret no pod of it references: %v", err)
	}
	t.Logf("a Secret no pod on the node uses: %v", err)
}

func anyMessage(lines []map[string]any, message string) bool {
	for _, l := range lines {
		if fmt.Sprint(l["message"]) == message {
			return true
		}
	}
	return false
}

// restartProxy restarts the proxy with other credentials and restores deploy/'s
// ServiceAccount when the test ends.
func restartProxy(t *testing.T, ctx context.Context, args ...string) {
	t.Helper()
	// The mode the kit runs the proxy in now, restored after the test.
	before := []string{"node"}
	if mode, err := os.ReadFile(kit.FirstNode().ProxyModeFile); err == nil {
		switch m := strings.TrimSpace(string(mode)); m {
		case "sa", "node":
			before = []string{m}
		default:
			before = []string{"--kubeconfig", m}
		}
	}
	if _, err := kit.Cluster(ctx, append([]string{"proxy"}, args...)...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := kit.Cluster(context.Background(), append([]string{"proxy"}, before...)...); err != nil {
			t.Errorf("restoring the proxy: %v", err)
		}
	})
}

// ---- pulls through the real kubelet, in parallel -------------------------------------

func TestPulls(t *testing.T) {
	basic := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"]
	token := kit.Env["REGCRED_CLUSTER_TOKEN_REGISTRY"]

	t.Run("UsernamePasswordBareServerAddress", func(t *testing.T) {
		t.Parallel()
		ctx := context2(t, 3*time.Minute)
		ns := namespace(t, ctx)
		mustSecret(t, ctx, ns, "creds", map[string]string{"serverAddress": basic, "username": user(), "password": password()})
		pod := runPod(t, ctx, ns, kit.PodSpec("hello", kit.Image("BASIC"), "creds"))
		// The image really runs: its first line is in the container's log (through the
		// API server and the kubelet's API).
		logs, err := kit.Client.CoreV1().Pods(ns).GetLogs(pod.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil {
			t.Fatalf("the pod's log: %v", err)
		}
		if !strings.Contains(string(logs), "regcred-kit hello from") {
			t.Fatalf("the container printed %q", logs)
		}
	})

	t.Run("AuthOnly", func(t *testing.T) {
		t.Parallel()
		ctx := context2(t, 3*time.Minute)
		ns := namespace(t, ctx)
		mustSecret(t, ctx, ns, "creds", map[string]string{"serverAddress": basic, "auth": BasicAuth(user(), password())})
		runPod(t, ctx, ns, kit.PodSpec("auth-only", kit.Image("BASIC"), "creds"))
	})

	t.Run("IdentityTokenOnlyAgainstTokenRegistry", func(t *testing.T) {
		t.Parallel()
		ctx := context2(t, 3*time.Minute)
		ns := namespace(t, ctx)
		mustSecret(t, ctx, ns, "creds", map[string]string{"serverAddress": token, "identityToken": kit.Env["REGCRED_CLUSTER_REFRESH_TOKEN"]})
		runPod(t, ctx, ns, kit.PodSpec("identity-token", kit.Image("TOKEN"), "creds"))
	})

	t.Run("DockerConfigJSONOnKubeletsOwnPath", func(t *testing.T) {
		t.Parallel()
		ctx := context2(t, 3*time.Minute)
		ns := namespace(t, ctx)
		if _, err := kit.CreateDockerConfigSecret(ctx, ns, "docker", basic, user(), password()); err != nil {
			t.Fatal(err)
		}
		before := metricValue(metrics(t), `regcred_cri_proxy_pulls_total{outcome="forwarded_with_auth"}`)
		offset := proxyLogSize(t)
		runPod(t, ctx, ns, kit.PodSpec("docker", kit.Image("BASIC"), "docker"))
		after := metricValue(metrics(t), `regcred_cri_proxy_pulls_total{outcome="forwarded_with_auth"}`)
		if after <= before {
			t.Fatalf("forwarded_with_auth went from %v to %v", before, after)
		}
		lines := proxyLines(proxyLogSince(t, offset), ns, "docker")
		if !anyMessage(lines, "PullImage already carries auth; forwarded untouched") {
			t.Fatalf("the proxy did not log kubelet's own credentials as forwarded untouched: %v", lines)
		}
		if anyMessage(lines, "PullImage with credentials from pull secret") {
			t.Fatalf("the proxy injected credentials into a pull that had kubelet's: %v", lines)
		}
	})

	t.Run("NoPullSecret", func(t *testing.T) {
		t.Parallel()
		ctx := context2(t, 3*time.Minute)
		ns := namespace(t, ctx)
		event := failPod(t, ctx, ns, kit.PodSpec("anonymous", kit.Image("BASIC")), anonymousRefusal)
		t.Logf("the event: %s", event.Message)
	})

	t.Run("WrongPasswordNamesTheSecret", func(t *testing.T) {
		t.Parallel()
		ctx := context2(t, 3*time.Minute)
		ns := namespace(t, ctx)
		mustSecret(t, ctx, ns, "wrong", map[string]string{"serverAddress": basic, "username": user(), "password": wrongPassword()})
		event := failPod(t, ctx, ns, kit.PodSpec("wrong", kit.Image("BASIC"), "wrong"),
			`401 Unauthorized`, regexp.QuoteMeta("pull secret(s) "+ns+"/wrong"))
		t.Logf("the event: %s", event.Message)
	})

	t.Run("TwoSecretsFirstWrong", func(t *testing.T) {
		t.Parallel()
		ctx := context2(t, 3*time.Minute)
		ns := namespace(t, ctx)
		mustSecret(t, ctx, ns, "a-wrong", map[string]string{"serverAddress": basic, "username": user(), "password": wrongPassword()})
		mustSecret(t, ctx, ns, "b-right", map[string]string{"serverAddress": basic, "username": user(), "password": password()})
		offset := proxyLogSize(t)
		runPod(t, ctx, ns, kit.PodSpec("two", kit.Image("BASIC"), "a-wrong", "b-right"))
		lines := proxyLines(proxyLogSince(t, offset), ns, "two")
		var order []string
		for _, l := range lines {
			// The pull attempts only (CreateContainer's decision names the Secret too).
			if s, ok := l["secret"]; ok && strings.HasPrefix(fmt.Sprint(l["message"]), "PullImage") {
				order = append(order, fmt.Sprint(l["message"], " ", s))
			}
		}
		want := []string{"PullImage with pull secret failed " + ns + "/a-wrong", "PullImage with credentials from pull secret " + ns + "/b-right"}
		if strings.Join(order, "|") != strings.Join(want, "|") {
			t.Fatalf("the proxy's attempts: %q, want %q", order, want)
		}
	})

	t.Run("RotationThroughTheAPI", func(t *testing.T) {
		t.Parallel()
		ctx := context2(t, 4*time.Minute)
		ns := namespace(t, ctx)
		mustSecret(t, ctx, ns, "rotating", map[string]string{"serverAddress": basic, "username": user(), "password": wrongPassword()})
		failPod(t, ctx, ns, kit.PodSpec("before", kit.Image("BASIC"), "rotating"), regexp.QuoteMeta(ns+"/rotating"))
		secret, err := kit.Client.CoreV1().Secrets(ns).Get(ctx, "rotating", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		secret.Data["password"] = []byte(password())
		if _, err := kit.Client.CoreV1().Secrets(ns).Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		// Nothing is restarted: the next pod (and kubelet's retries) use the new password.
		runPod(t, ctx, ns, kit.PodSpec("after", kit.Image("BASIC"), "rotating"))
	})
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

// ---- last: no secret value anywhere it must not be ------------------------------------

func TestNoSecretValueInEventsStatusOrLogs(t *testing.T) {
	ctx := context2(t, time.Minute)
	canariesMu.Lock()
	values := append([]string(nil), canaries...)
	canariesMu.Unlock()
	// Also the base64 forms, as they would appear inside a dockerconfigjson or a header.
	for _, v := range values[:len(values):len(values)] {
		values = append(values, base64.StdEncoding.EncodeToString([]byte(v)))
	}
	if len(values) < 6 {
		t.Fatalf("only %d canaries: the tests did not run", len(values))
	}
	var texts []struct{ what, text string }
	events, err := kit.Client.CoreV1().Events("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(events.Items) == 0 {
		t.Fatal("no events at all")
	}
	for _, e := range events.Items {
		texts = append(texts, struct{ what, text string }{"event " + e.Namespace + "/" + e.Name, e.Message + " " + e.Reason})
	}
	pods, err := kit.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		status, _ := json.Marshal(p.Status)
		texts = append(texts, struct{ what, text string }{"status of pod " + p.Namespace + "/" + p.Name, string(status)})
	}
	var logs []struct{ name, path string }
	for _, node := range kit.Desc.Nodes {
		logs = append(logs, struct{ name, path string }{node.Name + "'s kubelet", node.Logs.Kubelet},
			struct{ name, path string }{node.Name + "'s cri-proxy", node.Logs.Proxy},
			struct{ name, path string }{node.Name + "'s containerd", node.Logs.Containerd})
		if kit.Desc.Mode == "nri" {
			logs = append(logs, struct{ name, path string }{node.Name + "'s regcred-nri", node.Logs.NRI})
		}
		// The records file and the NRI plugin's refusals (in containerd's and kubelet's
		// logs, checked above) must not hold a value either.
		if records, err := os.ReadFile(filepath.Join(node.ProxyRecordsDir, "pulled-images.json")); err == nil {
			texts = append(texts, struct{ what, text string }{node.Name + "'s pulled-image records", string(records)})
		}
	}
	logs = append(logs, struct{ name, path string }{"kube-apiserver", kit.Desc.Logs["kube-apiserver"]})
	for _, l := range logs {
		name := l.name
		data, err := os.ReadFile(l.path)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) == 0 {
			t.Fatalf("the %s log is empty", name)
		}
		texts = append(texts, struct{ what, text string }{name + "'s log", string(data)})
	}
	for _, text := range texts {
		for _, v := range values {
			if strings.Contains(text.text, v) {
				t.Errorf("a secret value (%d characters) appears in the %s", len(v), text.what)
			}
		}
	}
}

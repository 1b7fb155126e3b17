package kit

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	credentialproviderv1 "k8s.io/kubelet/pkg/apis/credentialprovider/v1"
)

// The annotation a service account names its pull Secrets with (credential-provider mode).
const pullSecretsAnnotation = "regcred.dev/pull-secrets"

// The audience deploy/credential-provider gives kubelet for the pods' tokens.
const providerAudience = "https://kubernetes.default.svc.cluster.local"

// providerWorkload makes service account sa in ns name the Secrets secrets (created with
// their data), and lets it read them and record events, as
// deploy/credential-provider/workload-example.yaml does.
func providerWorkload(t testing.TB, ctx context.Context, ns, sa string, secrets map[string]map[string]string) {
	t.Helper()
	var names []string
	for name, data := range secrets {
		if _, err := kit.CreateRegcredSecret(ctx, ns, name, data); err != nil {
			t.Fatalf("creating Secret %s/%s: %v", ns, name, err)
		}
		names = append(names, name)
	}
	account := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
		Name: sa, Namespace: ns, Annotations: map[string]string{pullSecretsAnnotation: strings.Join(names, ",")},
	}}
	if _, err := kit.Client.CoreV1().ServiceAccounts(ns).Create(ctx, account, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: sa + "-pull-secrets", Namespace: ns},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: names, Verbs: []string{"get"}},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create"}},
		},
	}
	if _, err := kit.Client.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: sa + "-pull-secrets", Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}},
	}
	if _, err := kit.Client.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// saToken is a token of service account sa in ns for the plugin's audience, as kubelet
// asks for it.
func saToken(t testing.TB, ctx context.Context, ns, sa string) string {
	t.Helper()
	expiry := int64(3600)
	token, err := kit.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{providerAudience}, ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return token.Status.Token
}

// providerPod is a pod of image run as service account sa on the first node, pulling
// with policy.
func providerPod(name, image, sa string, policy corev1.PullPolicy) *corev1.Pod {
	pod := kit.PodSpec(name, image)
	pod.Spec.ServiceAccountName = sa
	pod.Spec.NodeName = kit.Node()
	for i := range pod.Spec.Containers {
		pod.Spec.Containers[i].ImagePullPolicy = policy
	}
	return pod
}

// The plugin's request and answer against the v1 API's own Go types: a request built
// with them (a real token of a real service account, as kubelet asks for it) is taken,
// and the answer decodes strictly into CredentialProviderResponse with the Secret's
// credentials for the image's repository, cached per image.
func TestCredentialProviderSpeaksTheV1API(t *testing.T) {
	ctx := context2(t, 2*time.Minute)
	ns := namespace(t, ctx)
	basic := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"]
	providerWorkload(t, ctx, ns, "builder", map[string]map[string]string{
		"corp": {"serverAddress": basic, "username": user(), "password": password()},
	})
	image := kit.Image("BASIC")
	request := credentialproviderv1.CredentialProviderRequest{
		TypeMeta:                  metav1.TypeMeta{APIVersion: "credentialprovider.kubelet.k8s.io/v1", Kind: "CredentialProviderRequest"},
		Image:                     image,
		ServiceAccountToken:       saToken(t, ctx, ns, "builder"),
		ServiceAccountAnnotations: map[string]string{pullSecretsAnnotation: "corp"},
	}
	input, _ := json.Marshal(request)
	cmd := exec.CommandContext(ctx, regcredBinary(t), "credential-provider", "--kubeconfig", kit.FirstNode().KubeletKubeconfig)
	cmd.Stdin = strings.NewReader(string(input))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("regcred credential-provider: %v\n%s", err, stderr.String())
	}
	var response credentialproviderv1.CredentialProviderResponse
	decoder := json.NewDecoder(strings.NewReader(string(out)))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&response); err != nil {
		t.Fatalf("the answer is not a v1 CredentialProviderResponse: %v\n%s", err, out)
	}
	repository := image[:strings.LastIndex(image, ":")]
	if response.APIVersion != "credentialprovider.kubelet.k8s.io/v1" || response.Kind != "CredentialProviderResponse" ||
		response.CacheKeyType != credentialproviderv1.ImagePluginCacheKeyType || response.CacheDuration == nil {
		t.Errorf("answer: %+v", response)
	}
	if got := response.Auth[repository]; got.Username != user() || got.Password != password() || len(response.Auth) != 1 {
		t.Errorf("auth for %s: want the Secret's username and password alone, got %d entries (user %q)", repository, len(response.Auth), got.Username)
	}
	if strings.Contains(stderr.String(), password()) {
		t.Errorf("the password is on stderr: %s", stderr.String())
	}

	// Another service account's token may not read corp: RBAC decides, the error names it.
	if _, err := kit.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	request.ServiceAccountToken = saToken(t, ctx, ns, "other")
	input, _ = json.Marshal(request)
	cmd = exec.CommandContext(ctx, regcredBinary(t), "credential-provider", "--kubeconfig", kit.FirstNode().KubeletKubeconfig)
	cmd.Stdin = strings.NewReader(string(input))
	combined, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(combined), "service account "+ns+"/other names pull Secret "+ns+"/corp") ||
		!strings.Contains(string(combined), "403") {
		t.Errorf("another account's token: want a refusal naming the account, the Secret and the 403, got %v:\n%s", err, combined)
	}
}

// Credential-provider mode on the real kubelet, with no regcred node agent at all
// (kubelet's image and runtime endpoints are containerd's): a pod whose service account
// names a regcredentials Secret runs a private image; a pod of another service account
// on the same node is refused that cached image by kubelet's own check (KEP-2535); a
// change of the Secret reaches the next pull within the cache duration; a token-only
// Secret gives regcred's error in kubelet's log and in the pod's events; no value
// anywhere. Needs a kit in that mode (scripts/test runs one).
func TestCredentialProviderMode(t *testing.T) {
	if kit.Desc.Mode != "credential-provider" {
		t.Skipf("the kit in %s runs in %q mode; this test needs `scripts/cluster up --mode credential-provider` (scripts/test runs one)", kit.Dir, kit.Desc.Mode)
	}
	ctx := context2(t, 6*time.Minute)
	node := kit.FirstNode()
	kubeletOffset := logSize(t, node.Logs.Kubelet)
	ns := namespace(t, ctx)
	basic := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"]
	providerWorkload(t, ctx, ns, "builder", map[string]map[string]string{
		"corp": {"serverAddress": basic, "username": user(), "password": password()},
	})
	image := kit.Image("BASIC")
	runPod(t, ctx, ns, providerPod("builder-1", image, "builder", corev1.PullAlways))

	// Another service account, no credentials, the image on the node: kubelet's own check
	// pulls again with this pod's (no) credentials, and the registry refuses.
	// (containerd's words for a pull with no credentials at all.)
	failPod(t, ctx, ns, providerPod("stranger", image, "default", corev1.PullIfNotPresent), `no basic auth credentials`)

	// The Secret changes: the next pull after the cache duration (the kit's 5 s) uses it.
	wrong := wrongPassword()
	secret, err := kit.Client.CoreV1().Secrets(ns).Get(ctx, "corp", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	secret.Data["password"] = []byte(wrong)
	if _, err := kit.Client.CoreV1().Secrets(ns).Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(7 * time.Second)
	// (Credentials were sent, and the registry refused them: the new, wrong password.)
	failPod(t, ctx, ns, providerPod("builder-after-rotation", image, "builder", corev1.PullAlways), `401 Unauthorized`)

	// A Secret with an identity token only: kubelet's API cannot carry it.
	token := kit.Env["REGCRED_CLUSTER_TOKEN_REGISTRY"]
	providerWorkload(t, ctx, ns, "tokens", map[string]map[string]string{
		"refresh": {"serverAddress": token, "identityToken": kit.Env["REGCRED_CLUSTER_REFRESH_TOKEN"]},
	})
	pod := providerPod("token-only", kit.Image("TOKEN"), "tokens", corev1.PullAlways)
	if _, err := kit.CreatePod(ctx, ns, pod); err != nil {
		t.Fatal(err)
	}
	want := regexp.MustCompile(`pull Secret ` + regexp.QuoteMeta(ns+"/refresh") + ` matches image .* with an identity token only.*node agent`)
	var event string
	for deadline := time.Now().Add(2 * time.Minute); event == "" && time.Now().Before(deadline); time.Sleep(time.Second) {
		events, err := kit.PodEvents(ctx, ns, "token-only")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			if e.Reason == "RegcredCredentialProvider" && want.MatchString(e.Message) {
				event = e.Message
			}
		}
	}
	if event == "" {
		t.Fatalf("no RegcredCredentialProvider event naming the token-only Secret on the pod:%s", kit.Describe(ns, "token-only", nil))
	}
	t.Logf("the pod's event: %s", event)
	kubeletLog := logSince(t, node.Logs.Kubelet, kubeletOffset)
	if !want.MatchString(kubeletLog) {
		t.Errorf("kubelet's log does not have regcred's error for the token-only Secret")
	}
	for _, value := range []string{password(), wrong, kit.Env["REGCRED_CLUSTER_REFRESH_TOKEN"]} {
		if strings.Contains(kubeletLog, value) || strings.Contains(event, value) {
			t.Errorf("a secret value is in kubelet's log or the event")
		}
	}
	// No node agent ran: kubelet's endpoints are containerd's.
	config, err := os.ReadFile(node.KubeletConfig)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(config), filepath.Base(node.ProxySocket)) {
		t.Errorf("kubelet's configuration names the agent's socket:\n%s", config)
	}
}

// Issue 23, finding 3, with a real credential provider plugin beside the node agent: a
// pod whose credentials kubelet got from the plugin (so kubelet sends them in PullImage
// itself) runs, and so does a replica of the same service account that never pulled
// (IfNotPresent): the agent leaves such images to kubelet's own checks instead of making
// them private under credentials no Secret of the pod's could prove.
func TestCredentialProviderBesideTheAgent(t *testing.T) {
	if kit.Desc.Mode == "credential-provider" {
		t.Skipf("the kit in %s runs without the node agent; this test is of the agent's modes", kit.Dir)
	}
	ctx := context2(t, 4*time.Minute)
	ns := namespace(t, ctx)
	basic := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"]
	providerWorkload(t, ctx, ns, "builder", map[string]map[string]string{
		"corp": {"serverAddress": basic, "username": user(), "password": password()},
	})
	image := pushFreshImage(t, ctx)
	offset := proxyLogSize(t)
	runPod(t, ctx, ns, providerPod("first", image, "builder", corev1.PullAlways))
	runPod(t, ctx, ns, providerPod("replica", image, "builder", corev1.PullIfNotPresent))
	log := proxyLogSince(t, offset)
	if !anyLine(proxyLines(log, ns, "first"), "PullImage already carries auth; forwarded untouched", "image", image) {
		t.Errorf("the agent did not see kubelet's own credentials for pod first: %v", proxyLines(log, ns, "first"))
	}
	if !anyLine(proxyLines(log, ns, "replica"), "image use allowed", "decision", "kubelet_checked") {
		t.Errorf("the replica was not allowed as left to kubelet's checks:\n%v", proxyLines(log, ns, "replica"))
	}
}

// What one pull costs regcred in each mode, in one run on the kit: credential-provider
// mode runs `regcred credential-provider` once per pull kubelet has no cached answer for
// (process start, the policy module's load, a kubeconfig read, one API read per Secret
// with the pod's token, the policy); the node agent resolves in its own process (the
// pod and its Secrets from the API, cached for the kit's 1 s, and the policy), read
// from its resolution histogram over pods pulled after the loop. ns/op is the plugin's
// exec; agent-resolution-µs the agent's mean over those pulls.
//
//	go test -run '^$' -bench BenchmarkCredentialProviderPerPull -benchtime 50x ./...
func BenchmarkCredentialProviderPerPull(b *testing.B) {
	if kit.Desc.Mode != "nri" && kit.Desc.Mode != "runtime-proxy" {
		b.Skipf("the kit runs in %q mode; this benchmark needs the node agent beside the plugin", kit.Desc.Mode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ns, err := kit.CreateNamespace(ctx, "bench-provider")
	if err != nil {
		b.Fatal(err)
	}
	defer kit.DeleteNamespace(ns)
	basic := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"]
	providerWorkload(b, ctx, ns, "builder", map[string]map[string]string{
		"corp": {"serverAddress": basic, "username": user(), "password": password()},
	})
	input, _ := json.Marshal(credentialproviderv1.CredentialProviderRequest{
		TypeMeta:                  metav1.TypeMeta{APIVersion: "credentialprovider.kubelet.k8s.io/v1", Kind: "CredentialProviderRequest"},
		Image:                     kit.Image("BASIC"),
		ServiceAccountToken:       saToken(b, ctx, ns, "builder"),
		ServiceAccountAnnotations: map[string]string{pullSecretsAnnotation: "corp"},
	})
	bin := regcredBinary(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cmd := exec.Command(bin, "credential-provider", "--kubeconfig", kit.FirstNode().KubeletKubeconfig)
		cmd.Stdin = strings.NewReader(string(input))
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), `"username"`) {
			b.Fatalf("regcred credential-provider: %v\n%s", err, out)
		}
	}
	b.StopTimer()

	// The agent's side: pods with the same Secret as an imagePullSecret, pulled through it.
	scrape := func() (sum, count float64) {
		resp, err := http.Get("http://" + kit.FirstNode().ProxyMetrics + "/metrics")
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return metricValue(string(body), "regcred_cri_proxy_resolution_duration_seconds_sum"),
			metricValue(string(body), "regcred_cri_proxy_resolution_duration_seconds_count")
	}
	sum0, count0 := scrape()
	for i := 0; i < 5; i++ {
		pod := kit.PodSpec(fmt.Sprintf("agent-%d", i), kit.Image("BASIC"), "corp")
		pod.Spec.NodeName = kit.Node()
		if _, err := kit.CreatePod(ctx, ns, pod); err != nil {
			b.Fatal(err)
		}
		if _, err := kit.WaitRunning(ctx, ns, pod.Name, 2*time.Minute); err != nil {
			b.Fatal(err)
		}
		time.Sleep(1100 * time.Millisecond) // past the kit's 1 s cache: each resolution reads the API
	}
	sum1, count1 := scrape()
	if count1 <= count0 {
		b.Fatal("the agent resolved nothing")
	}
	b.ReportMetric((sum1-sum0)/(count1-count0)*1e6, "agent-resolution-µs")
	b.ReportMetric(count1-count0, "agent-resolutions")
}

// pushFreshImage pushes an image of its own to the private registry and returns its
// name: no regcredentials Secret has pulled it on any node (which would make it private
// to the agent), and kubelet has no record of it either. It is the kit's preloaded image
// with a label of its own in its configuration, so a new image ID over the same layers:
// the preloaded image itself must not be pulled with credentials, or kubelet's own
// records would ask every later pod of it for credentials.
func pushFreshImage(t *testing.T, ctx context.Context) string {
	t.Helper()
	suffix := RandomSuffix()
	archive, local := uniqueImageArchive(t, suffix)
	image := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"] + "/provider/only-" + suffix + ":v1"
	pushArgs := []string{"--address", kit.FirstNode().ContainerdSocket, "-n", "regcred-push-" + suffix}
	for _, step := range [][]string{
		{"images", "import", archive},
		{"images", "tag", "--force", local, image},
		{"images", "push", "--plain-http", "--user", user() + ":" + password(), image},
	} {
		if out, err := exec.CommandContext(ctx, kit.Ctr(), append(pushArgs, step...)...).CombinedOutput(); err != nil {
			t.Fatalf("ctr %s: %v\n%s", step[1], err, out)
		}
	}
	t.Cleanup(func() {
		_ = exec.Command(kit.Ctr(), append(pushArgs, "images", "rm", image, local)...).Run()
	})
	return image
}

// uniqueImageArchive writes an OCI archive of the kit's preloaded image with the label
// dev.regcred.test/unique=suffix added to its configuration (a new image ID, the same
// layers), named regcred.local/kit/unique-SUFFIX:v1; it returns the archive and the name.
func uniqueImageArchive(t *testing.T, suffix string) (string, string) {
	t.Helper()
	blobs := map[string][]byte{}
	var index map[string]any
	f, err := os.Open(kit.Desc.Images.Preloaded.Archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	reader := tar.NewReader(f)
	for {
		header, err := reader.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(reader)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case header.Name == "index.json":
			if err := json.Unmarshal(data, &index); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(header.Name, "blobs/sha256/"):
			blobs["sha256:"+strings.TrimPrefix(header.Name, "blobs/sha256/")] = data
		}
	}
	digestOf := func(data []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(data)) }
	descriptor := index["manifests"].([]any)[0].(map[string]any)
	var manifest map[string]any
	if err := json.Unmarshal(blobs[descriptor["digest"].(string)], &manifest); err != nil {
		t.Fatal(err)
	}
	configDescriptor := manifest["config"].(map[string]any)
	var config map[string]any
	if err := json.Unmarshal(blobs[configDescriptor["digest"].(string)], &config); err != nil {
		t.Fatal(err)
	}
	inner, _ := config["config"].(map[string]any)
	if inner == nil {
		inner = map[string]any{}
		config["config"] = inner
	}
	labels, _ := inner["Labels"].(map[string]any)
	if labels == nil {
		labels = map[string]any{}
		inner["Labels"] = labels
	}
	labels["dev.regcred.test/unique"] = suffix
	configBytes, _ := json.Marshal(config)
	configDescriptor["digest"], configDescriptor["size"] = digestOf(configBytes), len(configBytes)
	blobs[digestOf(configBytes)] = configBytes
	manifestBytes, _ := json.Marshal(manifest)
	blobs[digestOf(manifestBytes)] = manifestBytes
	name := "regcred.local/kit/unique-" + suffix + ":v1"
	descriptor["digest"], descriptor["size"] = digestOf(manifestBytes), len(manifestBytes)
	descriptor["annotations"] = map[string]any{"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "v1"}
	indexBytes, _ := json.Marshal(index)

	path := filepath.Join(t.TempDir(), "unique.oci.tar")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	writer := tar.NewWriter(out)
	add := func(name string, data []byte) {
		if err := writer.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := writer.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	add("index.json", indexBytes)
	for digest, data := range blobs {
		add("blobs/sha256/"+strings.TrimPrefix(digest, "sha256:"), data)
	}
	if err := writer.Close(); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return path, name
}

// Issue 23, finding 3, the other way kubelet sends credentials itself: a Docker Secret
// the agent may not read (the agent in ServiceAccount mode, the namespace not bound to
// its role). kubelet reads it and sends it in PullImage; the pod runs, and so does a
// replica that never pulled: the agent leaves the image to kubelet's checks rather
// than lock the pod's replicas out.
func TestDockerSecretTheAgentCannotRead(t *testing.T) {
	if kit.Desc.Mode == "credential-provider" {
		t.Skipf("the kit in %s runs without the node agent", kit.Dir)
	}
	ctx := context2(t, 4*time.Minute)
	restartProxy(t, ctx, "sa")
	ns := namespace(t, ctx)
	basic := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"]
	if _, err := kit.CreateDockerConfigSecret(ctx, ns, "docker", basic, user(), password()); err != nil {
		t.Fatal(err)
	}
	image := pushFreshImage(t, ctx)
	offset := proxyLogSize(t)
	first := kit.PodSpec("first", image, "docker")
	first.Spec.NodeName = kit.Node()
	runPod(t, ctx, ns, first)
	replica := ifNotPresent(kit.PodSpec("replica", image, "docker"))
	replica.Spec.NodeName = kit.Node()
	runPod(t, ctx, ns, replica)
	log := proxyLogSince(t, offset)
	if !anyLine(proxyLines(log, ns, "first"), "PullImage already carries auth; forwarded untouched", "image", image) {
		t.Errorf("the agent did not see kubelet's own credentials for pod first: %v", proxyLines(log, ns, "first"))
	}
	if !anyLine(proxyLines(log, ns, "replica"), "image use allowed", "decision", "kubelet_checked") {
		t.Errorf("the replica was not allowed as left to kubelet's checks:\n%v", proxyLines(log, ns, "replica"))
	}
}

// Credential-provider mode's cluster side from the Helm chart's values: without the
// chart's node RBAC (the nodes' permission to request pod tokens of the plugin's
// audience) kubelet cannot hand the plugin a token and the private pull fails; `helm
// install` with node.mode=credential-provider (and no webhook) grants it, and a pod of
// the same service account runs the private image; `helm uninstall` takes it away again.
// (The node side, kubelet's --image-credential-provider-* flags and the binary, is the
// kit's: the chart has no node installer yet.)
func TestCredentialProviderModeFromTheChart(t *testing.T) {
	requireBareKit(t)
	if kit.Desc.Mode != "credential-provider" {
		t.Skipf("the kit in %s runs in %q mode; this test needs `scripts/cluster up --mode credential-provider` (scripts/test runs one)", kit.Dir, kit.Desc.Mode)
	}
	ctx := context2(t, 6*time.Minute)
	ns := namespace(t, ctx)
	basic := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"]
	providerWorkload(t, ctx, ns, "builder", map[string]map[string]string{
		"corp": {"serverAddress": basic, "username": user(), "password": password()},
	})
	image := kit.Image("BASIC")
	chart := mustAbs(t, filepath.Join("..", "..", "deploy", "chart"))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if out, err := helm(ctx, "uninstall", "regcred", "--namespace", deployNamespace, "--ignore-not-found", "--wait"); err != nil {
			t.Errorf("helm uninstall: %v\n%s", err, out)
		}
		if out, err := kit.Cluster(ctx, "kit-objects"); err != nil {
			t.Errorf("putting the kit's node-side objects back: %v\n%s", err, out)
		}
	})

	// Without the node RBAC: kubelet gets no token for the plugin, the pull fails.
	for _, kind := range []string{"clusterrolebinding", "clusterrole"} {
		if out, err := kubectl(ctx, nil, nil, "delete", kind, "regcred-credential-provider-audience", "--ignore-not-found"); err != nil {
			t.Fatalf("kubectl delete %s: %v\n%s", kind, err, out)
		}
	}
	time.Sleep(6 * time.Second) // past the plugin's cache duration (the kit's 5 s)
	node := kit.FirstNode()
	noToken := regexp.MustCompile(`is not authorized to request tokens for audience`)
	offset := logSize(t, node.Logs.Kubelet)
	refused := failPod(t, ctx, ns, providerPod("without-chart", image, "builder", corev1.PullAlways), `.`)
	t.Logf("without the chart's node RBAC: %s: %s", refused.Reason, refused.Message)
	if !noToken.MatchString(logSince(t, node.Logs.Kubelet, offset)) {
		t.Errorf("kubelet's log does not say it may not request the plugin's token")
	}

	// The chart's values for this mode.
	out, err := helm(ctx, "install", "regcred", chart, "--namespace", deployNamespace, "--take-ownership",
		"--set", "webhook.enabled=false", "--set", "node.mode=credential-provider", "--wait")
	if err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	t.Logf("helm install:\n%s", out)
	role, err := kit.Client.RbacV1().ClusterRoles().Get(ctx, "regcred-credential-provider-audience", metav1.GetOptions{})
	if err != nil || role.Labels["app.kubernetes.io/managed-by"] != "Helm" {
		t.Fatalf("the chart did not install the node RBAC: %v %v", err, role)
	}
	runPod(t, ctx, ns, providerPod("with-chart", image, "builder", corev1.PullAlways))

	// Uninstalled: the permission goes with the release.
	if out, err := helm(ctx, "uninstall", "regcred", "--namespace", deployNamespace, "--wait"); err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	time.Sleep(6 * time.Second)
	offset = logSize(t, node.Logs.Kubelet)
	refused = failPod(t, ctx, ns, providerPod("after-uninstall", image, "builder", corev1.PullAlways), `.`)
	t.Logf("after helm uninstall: %s: %s", refused.Reason, refused.Message)
	if !noToken.MatchString(logSince(t, node.Logs.Kubelet, offset)) {
		t.Errorf("after helm uninstall, kubelet's log does not say it may not request the plugin's token")
	}
}

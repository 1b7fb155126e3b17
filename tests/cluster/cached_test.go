package kit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Cached images and who may use them (README): a private image that one pod's
// regcredentials Secret pulled onto the node is used by another pod only with that pod's
// own credentials, with kubelet's KEP-2535 settings at their defaults. The cases run in
// one order on one image, so this test is serial: it stops the registries for a while
// and restarts the proxy.
func TestCachedPrivateImageNeedsThePodsOwnCredentials(t *testing.T) {
	ctx := context2(t, 10*time.Minute)
	basic := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"]
	image := basic + "/" + kit.Desc.Images.Cached.Name
	id := kit.Desc.Images.Cached.ID
	if kit.Desc.Images.Cached.Name == "" || id == "" {
		t.Fatalf("the kit's kit.json has no cached image name or ID: %+v", kit.Desc.Images)
	}

	// kubelet's own checks are at their defaults: no verification policy in its
	// configuration (so NeverVerifyPreloadedImages, with KubeletEnsureSecretPulledImages
	// on by default since 1.35).
	config, err := os.ReadFile(kit.FirstNode().KubeletConfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"imagePullCredentialsVerificationPolicy", "KubeletEnsureSecretPulledImages"} {
		if strings.Contains(string(config), key) {
			t.Fatalf("the kit's kubelet config sets %s; this test is about the defaults", key)
		}
	}

	nsA, nsB, nsC, nsD := namespace(t, ctx), namespace(t, ctx), namespace(t, ctx), namespace(t, ctx)
	mustSecret(t, ctx, nsA, "pull", map[string]string{"serverAddress": basic, "username": user(), "password": password()})
	before := decisions(t)

	// Pod A pulls the image with its Secret.
	runPod(t, ctx, nsA, ifNotPresent(kit.PodSpec("a1", image, "pull")))
	records := readRecords(t)
	if !strings.Contains(records, id) {
		t.Fatalf("the proxy's records do not name %s:\n%s", id, records)
	}
	for _, canary := range canaries {
		if canary != "" && strings.Contains(records, canary) {
			t.Fatal("the records hold a secret value")
		}
	}

	// Pod B, another namespace, no pull secret, IfNotPresent: kubelet finds the image and
	// does not pull; the proxy refuses the container, and the event says why.
	event := failCreate(t, ctx, nsB, ifNotPresent(kit.PodSpec("b", image)),
		regexp.QuoteMeta("regcred: pod "+nsB+"/b may not use image "+image),
		regexp.QuoteMeta("from a pull with other credentials"),
		regexp.QuoteMeta("the pod has no pull secret for this image"))
	t.Logf("pod B's event: %s", event.Message)

	// Pod C, a different Secret (the `auth` form) with valid credentials: the registry is
	// asked and accepts them.
	mustSecret(t, ctx, nsC, "other", map[string]string{"serverAddress": basic, "auth": BasicAuth(user(), password())})
	offset := proxyLogSize(t)
	runPod(t, ctx, nsC, ifNotPresent(kit.PodSpec("c", image, "other")))
	lines := proxyLines(proxyLogSince(t, offset), nsC, "c")
	if !anyLine(lines, "the pod's credentials are accepted for the image", "secret", nsC+"/other") {
		t.Fatalf("the proxy did not log C's Secret as accepted: %v", lines)
	}

	// Pod D, a wrong password: refused, naming the Secret and the registry's answer.
	mustSecret(t, ctx, nsD, "wrong", map[string]string{"serverAddress": basic, "username": user(), "password": wrongPassword()})
	event = failCreate(t, ctx, nsD, ifNotPresent(kit.PodSpec("d", image, "wrong")),
		regexp.QuoteMeta("regcred: pod "+nsD+"/d may not use image "+image),
		regexp.QuoteMeta(nsD+"/wrong: "), `401|[Uu]nauthorized`)
	t.Logf("pod D's event: %s", event.Message)

	// A registry outage: pod A's second replica starts from the records, before and after
	// a restart of the proxy (the records are on disk). A stopped registry process keeps
	// its sockets open and answers nothing, so a registry round trip would hang the pod.
	first := decisions(t)
	for decision, least := range map[string]float64{"refused": 2, "verified": 1} {
		if got := first[decision] - before[decision]; got < least {
			t.Errorf("regcred_cri_proxy_image_use_total{decision=%q} grew by %v, want at least %v (before %v, after %v)",
				decision, got, least, before, first)
		}
	}
	resume := pauseProcesses(t, "the registries", registryProcesses(t)...)
	offset = proxyLogSize(t)
	runPod(t, ctx, nsA, ifNotPresent(kit.PodSpec("a2", image, "pull")))
	if out, err := kit.Cluster(ctx, "proxy", "node"); err != nil {
		t.Fatalf("restarting the proxy: %v\n%s", err, out)
	}
	runPod(t, ctx, nsA, ifNotPresent(kit.PodSpec("a3", image, "pull")))
	resume()
	log := proxyLogSince(t, offset)
	for _, pod := range []string{"a2", "a3"} {
		if !anyLine(proxyLines(log, nsA, pod), "the pod's credentials are accepted for the image", "decision", "remembered") {
			t.Errorf("pod %s was not allowed from the records: %v", pod, proxyLines(log, nsA, pod))
		}
	}

	// The proxy's metrics start again at its restart.
	before = decisions(t)

	// A public image (anonymous registry) and the kit's preloaded image (imported into
	// every node's containerd before regcred first started there, never pulled): every
	// pod uses them, with or without pull secrets. (Not imported again here: a second
	// import replaces the image under kubelet, whose ImageStatus can then miss it, pull,
	// fail on the unresolvable name, and keep an unfinished pull intent that makes it
	// pull again at every retry.)
	open := kit.Env["REGCRED_CLUSTER_PUBLIC_REGISTRY"] + "/" + kit.Desc.Images.Open.Name
	runPod(t, ctx, nsB, ifNotPresent(kit.PodSpec("open-1", open)))
	runPod(t, ctx, nsD, ifNotPresent(kit.PodSpec("open-2", open, "wrong")))
	runPod(t, ctx, nsB, ifNotPresent(kit.PodSpec("preloaded", kit.Desc.Images.Preloaded.Name)))

	after := decisions(t)
	for decision, least := range map[string]float64{"preloaded": 1, "public": 1} {
		if got := after[decision] - before[decision]; got < least {
			t.Errorf("regcred_cri_proxy_image_use_total{decision=%q} grew by %v, want at least %v (before %v, after %v)",
				decision, got, least, before, after)
		}
	}

	// The hole, shown on the same node: with the check off (NeverVerify, regcred 0.1), pod
	// B's twin runs the private image with no credentials at all.
	if out, err := kit.ClusterEnv(ctx, []string{"REGCRED_KIT_PROXY_ARGS=--image-pull-credentials-verification-policy NeverVerify"}, "proxy", "node"); err != nil {
		t.Fatalf("restarting the proxy with NeverVerify: %v\n%s", err, out)
	}
	defer func() {
		if out, err := kit.Cluster(context.Background(), "proxy", "node"); err != nil {
			t.Errorf("restarting the proxy with its defaults: %v\n%s", err, out)
		}
	}()
	runPod(t, ctx, nsB, ifNotPresent(kit.PodSpec("b-without-the-check", image)))
}

// ifNotPresent makes pod use an image on the node without pulling (the default for
// tagged images, and the case kubelet never calls PullImage for).
func ifNotPresent(pod *corev1.Pod) *corev1.Pod {
	for i := range pod.Spec.Containers {
		pod.Spec.Containers[i].ImagePullPolicy = corev1.PullIfNotPresent
	}
	return pod
}

func failCreate(t *testing.T, ctx context.Context, ns string, pod *corev1.Pod, patterns ...string) *corev1.Event {
	t.Helper()
	return failWith(t, ctx, ns, pod, kit.WaitCreateFailure, patterns)
}

// decisions reads regcred_cri_proxy_image_use_total by decision.
func decisions(t *testing.T) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, d := range []string{"refused", "verified", "remembered", "preloaded", "public", "anonymous"} {
		out[d] = metricValue(metrics(t), `regcred_cri_proxy_image_use_total{decision="`+d+`"}`)
	}
	return out
}

func anyLine(lines []map[string]any, message, key, value string) bool {
	for _, l := range lines {
		if fmt.Sprint(l["message"]) == message && fmt.Sprint(l[key]) == value {
			return true
		}
	}
	return false
}

func readRecords(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(kit.FirstNode().ProxyRecordsDir, "pulled-images.json"))
	if err != nil {
		t.Fatalf("the proxy's pulled-image records: %v", err)
	}
	return string(data)
}

// registryProcesses is the kit's registries process (it serves the token server) and
// every process under it (the docker-registry processes, in their own process groups).
func registryProcesses(t *testing.T) []int {
	t.Helper()
	data, err := os.ReadFile(kit.Desc.PidFiles["registries"])
	if err != nil {
		t.Fatal(err)
	}
	root, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatalf("registries.pid: %v", err)
	}
	parents := map[int][]int{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) > 1 {
			ppid, _ := strconv.Atoi(fields[1])
			parents[ppid] = append(parents[ppid], pid)
		}
	}
	all := []int{root}
	for i := 0; i < len(all); i++ {
		all = append(all, parents[all[i]]...)
	}
	if len(all) < 4 {
		t.Fatalf("the registries process %d has %d processes under it, want its three registries", root, len(all)-1)
	}
	return all
}

// An image volume (KEP-4639) of a private image is checked as the container's own image
// is (issue 23, finding 1): a pod without credentials that mounts an image another pod's
// Secret pulled onto the node, with a public image for its container, is refused; a pod
// with valid credentials mounts it. In NRI mode containerd shows the volume only as a
// mount of .../image-volumes/SANDBOX/MANIFEST; in the legacy mode kubelet names its image.
func TestImageVolumeOfAPrivateImageNeedsThePodsOwnCredentials(t *testing.T) {
	ctx := context2(t, 4*time.Minute)
	nsA, nsB, nsC := namespace(t, ctx), namespace(t, ctx), namespace(t, ctx)
	basic := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"]
	image := basic + "/" + kit.Desc.Images.Cached.Name
	for _, ns := range []string{nsA, nsC} {
		mustSecret(t, ctx, ns, "creds", map[string]string{"serverAddress": basic, "username": user(), "password": password()})
	}
	// Pod A pulls the private image with its Secret.
	runPod(t, ctx, nsA, kit.PodSpec("a", image, "creds"))

	withVolume := func(name string, pullSecrets ...string) *corev1.Pod {
		pod := ifNotPresent(kit.PodSpec(name, "regcred.local/kit/pause:v1", pullSecrets...))
		pod.Spec.Volumes = []corev1.Volume{{
			Name: "private",
			VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{
				Reference: image, PullPolicy: corev1.PullIfNotPresent,
			}},
		}}
		pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "private", MountPath: "/private"}}
		return pod
	}
	// Pod B: no pull secret; the container's own image is the kit's pause image (preloaded,
	// every pod's), the volume is the private image already on the node.
	event := failCreate(t, ctx, nsB, withVolume("b"),
		regexp.QuoteMeta("regcred: pod "+nsB+"/b may not use image"),
		regexp.QuoteMeta("the pod has no pull secret for this image"))
	t.Logf("pod B's event: %s", event.Message)
	// Pod C: its own valid Secret: the volume is verified with it, the pod runs.
	runPod(t, ctx, nsC, withVolume("c", "creds"))
}

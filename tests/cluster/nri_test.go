package kit

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// NRI mode (issue 22): regcred-nri, a validator plugin at each node's NRI socket, asks the
// node agent at every container creation; kubelet's runtime endpoint is containerd's own.
// These tests need a kit in that mode (the default; scripts/test runs it).
func needNRI(t *testing.T) {
	t.Helper()
	if kit.Desc.Mode != "nri" {
		t.Skipf("the kit in %s runs in %q mode; these tests are of NRI mode (scripts/cluster up --mode nri, the default)", kit.Dir, kit.Desc.Mode)
	}
}

// logSize and logSince read a log file from an offset.
func logSize(t *testing.T, path string) int64 {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Size()
}

func logSince(t *testing.T, path string, offset int64) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) < offset {
		return string(data)
	}
	return string(data[offset:])
}

// stillNotRunning fails the test if the pod runs at any point during d.
func stillNotRunning(t *testing.T, ctx context.Context, ns, name string, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(time.Second) {
		pod, err := kit.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if pod.Status.Phase == corev1.PodRunning {
			t.Fatalf("pod %s/%s runs, but must not: %s", ns, name, kit.Describe(ns, name, pod))
		}
	}
}

// eventMatching waits for an event of the pod whose message matches every pattern.
func eventMatching(t *testing.T, ctx context.Context, ns, name string, timeout time.Duration, patterns ...string) string {
	t.Helper()
	var res []*regexp.Regexp
	for _, p := range patterns {
		res = append(res, regexp.MustCompile(p))
	}
	var found string
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		events, err := kit.PodEvents(ctx, ns, name)
		if err != nil {
			return false, nil
		}
		for _, e := range events {
			if matchesAll(e.Message, res) {
				found = e.Message
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		pod, _ := kit.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		t.Fatalf("pod %s/%s: no event matching %v after %s: %s", ns, name, patterns, timeout, kit.Describe(ns, name, pod))
	}
	return found
}

// Each node's kubelet talks to containerd for every RuntimeService call and to regcred
// only for images; containerd's NRI requires the regcred plugin.
func TestNRIModeLeavesKubeletsRuntimeEndpointToContainerd(t *testing.T) {
	needNRI(t)
	for _, node := range kit.Desc.Nodes {
		data, err := os.ReadFile(node.KubeletConfig)
		if err != nil {
			t.Fatal(err)
		}
		config := string(data)
		for _, want := range []string{
			"containerRuntimeEndpoint: unix://" + node.ContainerdSocket + "\n",
			"imageServiceEndpoint: unix://" + node.ProxySocket + "\n",
		} {
			if !strings.Contains(config, want) {
				t.Errorf("%s: kubelet's config has no line %q:\n%s", node.Name, strings.TrimSpace(want), config)
			}
		}
		// containerd's configuration as it reads it (the kit's file and the drop-in
		// deploy/nri ships, merged): its default validator requires regcred.
		dump, err := exec.Command(filepath.Join(kit.Desc.Runtime.BinDir, "containerd"), "--config",
			filepath.Join(filepath.Dir(node.ContainerdSocket), "config.toml"), "config", "dump").Output()
		if err != nil {
			t.Fatalf("containerd config dump: %v", err)
		}
		for _, want := range []string{"required_plugins = ['regcred']", "tolerate_missing_plugins_annotation = '" + kit.Desc.NRITolerationAnnotation + "'", "socket_path = '" + node.NRISocket + "'"} {
			if !strings.Contains(string(dump), want) {
				t.Errorf("%s: containerd's configuration has no %s:\n%s", node.Name, want, dump)
			}
		}
	}
}

// The node agent killed: the node goes on managing its containers (exec, logs, Ready, no
// runtime errors in kubelet's log); only new containers wait, with an event naming regcred;
// back under supervision, they start within seconds; the same across a containerd restart.
func TestNodeAgentKilledLeavesTheNodeManagingItsContainers(t *testing.T) {
	needNRI(t)
	ctx := context2(t, 8*time.Minute)
	ns := namespace(t, ctx)
	node := kit.FirstNode()
	open := kit.Env["REGCRED_CLUSTER_PUBLIC_REGISTRY"] + "/" + kit.Desc.Images.Open.Name
	marker := "steady-" + RandomSuffix()
	steady := kit.PodSpec("steady", open)
	steady.Spec.Containers[0].Command = []string{"/bin/busybox", "sh", "-c", "echo " + marker + "; while :; do sleep 1; done"}
	runPod(t, ctx, ns, steady)

	kubeletOffset := logSize(t, node.Logs.Kubelet)
	killAndWait(t, pidFile(t, node.PidFiles.Proxy))
	killed := time.Now()
	t.Cleanup(func() {
		// Whatever happened, the node gets its agent back as the kit runs it.
		if _, err := kit.Cluster(context.Background(), "proxy", "node"); err != nil {
			t.Errorf("restarting the node agent: %v", err)
		}
	})
	waiting := ifNotPresent(kit.PodSpec("new-while-down", open))
	if _, err := kit.CreatePod(ctx, ns, waiting); err != nil {
		t.Fatal(err)
	}
	// For 20 s: exec and logs work, the node stays Ready and renews its lease.
	for time.Since(killed) < 20*time.Second {
		out, err := kubectl(ctx, nil, nil, "exec", "-n", ns, "steady", "--", "/bin/busybox", "echo", "exec-works")
		if err != nil || !strings.Contains(out, "exec-works") {
			t.Fatalf("kubectl exec %.0f s after the agent was killed: %v\n%s", time.Since(killed).Seconds(), err, out)
		}
		out, err = kubectl(ctx, nil, nil, "logs", "-n", ns, "steady")
		if err != nil || !strings.Contains(out, marker) {
			t.Fatalf("kubectl logs %.0f s after the agent was killed: %v\n%s", time.Since(killed).Seconds(), err, out)
		}
		time.Sleep(2 * time.Second)
	}
	nodeReadyAndRenewed(t, ctx, kit.Node(), killed)
	pod, err := kit.Client.CoreV1().Pods(ns).Get(ctx, waiting.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Status.Phase == corev1.PodRunning {
		t.Fatalf("a new pod runs with the agent down (nothing checked its image): %s", kit.Describe(ns, waiting.Name, pod))
	}
	// kubelet's image calls go to regcred's socket: the event names it.
	message := eventMatching(t, ctx, ns, waiting.Name, 30*time.Second, regexp.QuoteMeta(filepath.Base(node.ProxySocket)))
	t.Logf("the new pod's event with the agent down: %s", message)
	// kubelet's RuntimeService calls all went to containerd: none failed.
	kubeletLog := logSince(t, node.Logs.Kubelet, kubeletOffset)
	for _, line := range strings.Split(kubeletLog, "\n") {
		if strings.Contains(line, node.ContainerdSocket) && strings.Contains(strings.ToLower(line), "error") ||
			strings.Contains(line, "PLEG is not healthy") || strings.Contains(line, "container runtime is down") ||
			strings.Contains(line, "Container runtime not ready") {
			t.Errorf("kubelet logged a runtime error with only the agent down: %s", line)
		}
	}

	// Back, supervised (the systemd unit's Restart=always): the waiting pod runs.
	restartProxy(t, ctx, "--supervise", "node")
	back := time.Now()
	if _, err := kit.WaitRunning(ctx, ns, waiting.Name, runTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("the waiting pod Running %.1f s after the agent was back (kubelet's back-off)", time.Since(back).Seconds())
	// SIGKILL under supervision: back within about a second, a new pod runs.
	child := pidFile(t, node.PidFiles.ProxyChild)
	killAndWait(t, child)
	runPod(t, ctx, ns, ifNotPresent(kit.PodSpec("after-supervised-kill", open)))
	if again := pidFile(t, node.PidFiles.ProxyChild); again == child {
		t.Fatalf("the agent's PID is still %d: the supervisor did not restart it", child)
	}

	// containerd restarted under the agent and regcred-nri: the plugin connects again by
	// itself, the running pod goes on, and a new pod runs.
	nriOffset := logSize(t, node.Logs.NRI)
	if out, err := kit.Cluster(ctx, "restart-runtime", "--node", kit.Node()); err != nil {
		t.Fatalf("restarting containerd: %v\n%s", err, out)
	}
	runPod(t, ctx, ns, ifNotPresent(kit.PodSpec("after-runtime-restart", open)))
	if log := logSince(t, node.Logs.NRI, nriOffset); !strings.Contains(log, "Started plugin") {
		t.Errorf("regcred-nri's log shows no new registration after containerd's restart:\n%s", log)
	}
	out, err := kubectl(ctx, nil, nil, "exec", "-n", ns, "steady", "--", "/bin/busybox", "echo", "still-here")
	if err != nil || !strings.Contains(out, "still-here") {
		t.Fatalf("the steady pod after containerd's restart: %v\n%s", err, out)
	}
}

// nodeReadyAndRenewed: the node is Ready and its kubelet renewed its lease after since.
func nodeReadyAndRenewed(t *testing.T, ctx context.Context, name string, since time.Time) {
	t.Helper()
	node, err := kit.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ready := false
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			ready = c.Status == corev1.ConditionTrue
			if !ready {
				t.Errorf("node %s: Ready=%s: %s", name, c.Status, c.Message)
			}
		}
	}
	if !ready {
		return
	}
	var lease *coordinationv1.Lease
	lease, err = kit.Client.CoordinationV1().Leases("kube-node-lease").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if lease.Spec.RenewTime == nil || lease.Spec.RenewTime.Time.Before(since) {
		t.Errorf("node %s: its lease was not renewed since %s (%v)", name, since.Format(time.RFC3339), lease.Spec.RenewTime)
	}
}

// regcred-nri away. Stopped mid-decision (SIGSTOP: it holds the connection and answers
// nothing), the one creation fails when containerd's 2 s plugin timeout ends: a validator
// that times out fails its request. containerd then drops the plugin, and its default
// validator refuses every creation ("required plugin regcred not present") except a pod
// with the toleration annotation. Resumed, the plugin connects again and the pod runs.
func TestNRIPluginAwayFailsClosedExceptTolerated(t *testing.T) {
	needNRI(t)
	ctx := context2(t, 6*time.Minute)
	ns := namespace(t, ctx)
	i := len(kit.Desc.Nodes) - 1
	node := kit.Desc.Nodes[i]
	pause := "regcred.local/kit/pause:v1"
	resume := pauseProcesses(t, "regcred-nri", pidFile(t, node.PidFiles.NRI))

	first := onNode(ifNotPresent(kit.PodSpec("while-stopped", pause)), node.Name)
	if _, err := kit.CreatePod(ctx, ns, first); err != nil {
		t.Fatal(err)
	}
	timedOut := eventMatching(t, ctx, ns, first.Name, failTimeout, `regcred`, `deadline exceeded|timeout|timed out`)
	t.Logf("the creation during the stall: %s", timedOut)
	missing := eventMatching(t, ctx, ns, first.Name, failTimeout, regexp.QuoteMeta(`required plugin "regcred" not present`))
	t.Logf("the next try, the plugin dropped: %s", missing)

	// The toleration (allowed in kube-system by the chart's admission policy): runs without regcred.
	tolerated := onNode(ifNotPresent(kit.PodSpec("tolerated-"+RandomSuffix(), pause)), node.Name)
	tolerated.Annotations = map[string]string{kit.Desc.NRITolerationAnnotation + "/pod": "true"}
	if _, err := kit.CreatePod(ctx, "kube-system", tolerated); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kit.Client.CoreV1().Pods("kube-system").Delete(context.Background(), tolerated.Name, metav1.DeleteOptions{})
	})
	if _, err := kit.WaitRunning(ctx, "kube-system", tolerated.Name, runTimeout); err != nil {
		t.Fatal(err)
	}
	stillNotRunning(t, ctx, ns, first.Name, 3*time.Second)

	resume()
	back := time.Now()
	if _, err := kit.WaitRunning(ctx, ns, first.Name, runTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("the refused pod Running %.1f s after regcred-nri resumed (its reconnection and kubelet's back-off)", time.Since(back).Seconds())
}

// The chart's admission policy (node.mode=nri): the toleration annotation, in each form containerd reads, is refused
// on a pod outside the listed namespaces; kube-system may use it.
func TestNRITolerationAnnotationRefusedAtAdmission(t *testing.T) {
	needNRI(t)
	ctx := context2(t, time.Minute)
	ns := namespace(t, ctx)
	key := kit.Desc.NRITolerationAnnotation
	dryRun := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	// A policy (re)created a moment ago (TestHelmChartOnTheKit adopts, deletes and restores it) is
	// enforced once the API server has loaded it: wait for that, at most 30 s.
	_ = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		pod := kit.PodSpec("tolerates", "regcred.local/kit/pause:v1")
		pod.Annotations = map[string]string{key: "true"}
		_, err := kit.Client.CoreV1().Pods(ns).Create(ctx, pod, dryRun)
		return IsForbidden(err), nil
	})
	for _, k := range []string{key, key + "/pod", key + "/container.hello"} {
		pod := kit.PodSpec("tolerates", "regcred.local/kit/pause:v1")
		pod.Annotations = map[string]string{k: "true"}
		_, err := kit.Client.CoreV1().Pods(ns).Create(ctx, pod, dryRun)
		if !IsForbidden(err) || !strings.Contains(err.Error(), "regcred-nri-toleration") {
			t.Errorf("annotation %s in a tenant namespace: want Forbidden by regcred-nri-toleration, got %v", k, err)
		}
		_, err = kit.Client.CoreV1().Pods("kube-system").Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Errorf("annotation %s in kube-system: %v", k, err)
		}
	}
	// An annotation that only looks alike is not the toleration.
	pod := kit.PodSpec("lookalike", "regcred.local/kit/pause:v1")
	pod.Annotations = map[string]string{"example.com/" + key: "true"}
	if _, err := kit.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Errorf("an unrelated annotation was refused: %v", err)
	}
}

// A pod on record restarts its container from the records alone: the API server and the
// registries stopped, the agent restarted (its cache of Secrets gone), the container of a
// pod allowed before is created again, with the decision `pod_on_record`.
func TestPodOnRecordRestartsThroughAnAPIAndRegistryOutage(t *testing.T) {
	ctx := context2(t, 5*time.Minute)
	ns := namespace(t, ctx)
	basic := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"]
	mustSecret(t, ctx, ns, "creds", map[string]string{"serverAddress": basic, "username": user(), "password": password()})
	image := kit.Image("BASIC")
	// The image pulled with the pod's credentials, then a pod that exits every 2 s.
	runPod(t, ctx, ns, kit.PodSpec("puller", image, "creds"))
	crash := ifNotPresent(kit.PodSpec("restarts", image, "creds"))
	crash.Spec.Containers[0].Command = []string{"/bin/busybox", "sh", "-c", "sleep 2; exit 1"}
	if _, err := kit.CreatePod(ctx, ns, crash); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, runTimeout, true, func(ctx context.Context) (bool, error) {
		pod, err := kit.Client.CoreV1().Pods(ns).Get(ctx, crash.Name, metav1.GetOptions{})
		if err != nil || len(pod.Status.ContainerStatuses) == 0 {
			return false, nil
		}
		return pod.Status.ContainerStatuses[0].RestartCount >= 1, nil
	}); err != nil {
		t.Fatalf("the pod's container did not restart once: %v", err)
	}

	// The outage: API server and registries stopped, the agent restarted.
	resume := pauseProcesses(t, "the API server and the registries",
		append(registryProcesses(t), pidFile(t, kit.Desc.PidFiles["kube-apiserver"]))...)
	if out, err := kit.Cluster(ctx, "proxy", "node"); err != nil {
		t.Fatalf("restarting the agent: %v\n%s", err, out)
	}
	offset := proxyLogSize(t)
	var lines []map[string]any
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 90*time.Second, true, func(context.Context) (bool, error) {
		lines = proxyLines(proxyLogSince(t, offset), ns, crash.Name)
		return anyLine(lines, "the pod was allowed the image before; allowed from the records", "decision", "pod_on_record"), nil
	})
	resume()
	if err != nil {
		t.Fatalf("no container restart allowed from the records during the outage; the agent's lines of the pod: %v", lines)
	}
	for _, l := range lines {
		if l["decision"] != nil && l["decision"] != "pod_on_record" {
			t.Errorf("during the outage the pod was decided otherwise: %v", l)
		}
	}
}

// How the agent learns which image a container is created from: containerd 2.4 puts the
// image ID (its config digest) in the NRI request; containerd 2.3 gives only the name
// kubelet asked for, and the agent asks the image service which ID that name has now.
func TestNRIImageIdentityPerRuntimeVersion(t *testing.T) {
	needNRI(t)
	ctx := context2(t, 2*time.Minute)
	ns := namespace(t, ctx)
	want := "image-service"
	if !strings.HasPrefix(kit.Desc.Runtime.Version, "2.3.") {
		want = "runtime"
	}
	offset := proxyLogSize(t)
	open := kit.Env["REGCRED_CLUSTER_PUBLIC_REGISTRY"] + "/" + kit.Desc.Images.Open.Name
	runPod(t, ctx, ns, kit.PodSpec("identified", open))
	lines := proxyLines(proxyLogSince(t, offset), ns, "identified")
	if !anyLine(lines, "image identified", "id_from", want) {
		t.Fatalf("containerd %s: want the image's ID from the %s; the agent's lines of the pod: %v", kit.Desc.Runtime.Version, want, lines)
	}
	for _, l := range lines {
		if l["message"] == "image identified" && l["id"] != kit.Desc.Images.Open.ID {
			t.Errorf("the agent identified %v, the image's ID is %s", l["id"], kit.Desc.Images.Open.ID)
		}
	}
}

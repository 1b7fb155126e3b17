package kit

import (
	"context"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// pidFile reads a PID file the kit's description names.
func pidFile(t testing.TB, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// killAndWait sends SIGKILL to pid and waits until it is gone.
func killAndWait(t testing.TB, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("killing the proxy (pid %d): %v", pid, err)
	}
	for deadline := time.Now().Add(10 * time.Second); syscall.Kill(pid, 0) == nil; {
		if time.Now().After(deadline) {
			t.Fatalf("the proxy (pid %d) is still there after SIGKILL", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pauseProcesses stops pids (SIGSTOP: they keep their sockets and answer nothing) and
// returns the function that resumes them; it also runs when the test ends.
func pauseProcesses(t *testing.T, what string, pids ...int) (resume func()) {
	t.Helper()
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatalf("stopping %s (pid %d): %v", what, pid, err)
		}
	}
	resumed := false
	resume = func() {
		if resumed {
			return
		}
		resumed = true
		for _, pid := range pids {
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Errorf("resuming %s (pid %d): %v", what, pid, err)
			}
		}
	}
	t.Cleanup(resume)
	return resume
}

func socketAccepts() bool {
	conn, err := net.Dial("unix", kit.Env["REGCRED_CLUSTER_PROXY_SOCKET"])
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// The node proxy as a host service next to kubelet (deploy/cri-proxy/regcred-cri-proxy.service;
// the kit runs the same binary as a process of its own, with `--supervise` standing in for
// the unit's Restart=always RestartSec=1).
//
// Killed with nothing to restart it, the node starts no container: kubelet's runtime and
// image endpoints are both the proxy, so neither a pod that pulls nor one whose image is
// on the node (IfNotPresent) leaves Pending. That is why the DaemonSet mode cannot heal:
// the proxy's own container is such a container. Started again, both pods run without
// anything else touched. Supervised, a SIGKILLed proxy is back within about a second and
// a pod created right after the kill runs.
func TestHostServiceProxyRecovers(t *testing.T) {
	ctx := context2(t, 6*time.Minute)
	ns := namespace(t, ctx)
	mustSecret(t, ctx, ns, "creds", map[string]string{
		"serverAddress": kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"], "username": user(), "password": password(),
	})
	image := kit.Image("BASIC")
	// An image on the node since `up` (imported, never pulled), started IfNotPresent: no
	// pull, only ImageStatus.
	present := kit.PodSpec("present-image", "regcred.local/kit/pause:v1")
	present.Spec.Containers[0].ImagePullPolicy = corev1.PullIfNotPresent

	// 1. Unsupervised (as the kit starts it by default): killed, nothing brings it back.
	// kubelet's runtime and image endpoints are both the proxy: no sandbox, no image
	// check, no pull; the pods stay Pending for as long as the proxy is away.
	offset := proxyLogSize(t)
	killAndWait(t, pidFile(t, kit.FirstNode().PidFiles.Proxy))
	killed := time.Now()
	for _, pod := range []*corev1.Pod{kit.PodSpec("pull-while-down", image, "creds"), present} {
		if _, err := kit.CreatePod(ctx, ns, pod); err != nil {
			t.Fatal(err)
		}
	}
	for time.Since(killed) < 20*time.Second {
		for _, name := range []string{"pull-while-down", present.Name} {
			pod, err := kit.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if pod.Status.Phase != corev1.PodPending {
				t.Fatalf("pod %s is %s with the proxy down: %s", name, pod.Status.Phase, kit.Describe(ns, name, pod))
			}
		}
		time.Sleep(time.Second)
	}
	for _, name := range []string{"pull-while-down", present.Name} {
		pod, _ := kit.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		t.Logf("pod %s 20 s after the kill: %s", name, kit.Describe(ns, name, pod))
	}
	node, err := kit.Client.CoreV1().Nodes().Get(ctx, kit.Node(), metav1.GetOptions{})
	if err == nil {
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				t.Logf("node Ready=%s %.0f s after the kill: %s", c.Status, time.Since(killed).Seconds(), c.Message)
			}
		}
	}
	if socketAccepts() {
		t.Fatal("the proxy's socket accepts connections: something restarted it")
	}

	// 2. Started again, supervised: both pods run, kubelet retrying on its own.
	restartProxy(t, ctx, "--supervise", "node")
	back := time.Now()
	for _, name := range []string{"pull-while-down", present.Name} {
		if _, err := kit.WaitRunning(ctx, ns, name, runTimeout); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("both pods Running %.1f s after the proxy was back (kubelet's back-off)", time.Since(back).Seconds())

	// 3. Supervised: SIGKILL the proxy, create a pod that pulls at once.
	child := pidFile(t, kit.FirstNode().PidFiles.ProxyChild)
	killAndWait(t, child)
	killed = time.Now()
	if _, err := kit.CreatePod(ctx, ns, kit.PodSpec("pull-after-kill", image, "creds")); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return socketAccepts(), nil
	}); err != nil {
		t.Fatalf("the supervised proxy did not come back: %v", err)
	}
	t.Logf("supervised proxy accepting again %.2f s after SIGKILL", time.Since(killed).Seconds())
	if again := pidFile(t, kit.FirstNode().PidFiles.ProxyChild); again == child {
		t.Errorf("the proxy's PID is still %d", child)
	}
	if _, err := kit.WaitRunning(ctx, ns, "pull-after-kill", runTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("pod created right after the kill Running %.1f s after it", time.Since(killed).Seconds())
	restarted := regexp.MustCompile(`=== regcred-kit: cri-proxy \(pid ` + strconv.Itoa(child) + `\) exited with 137, restarting in 1 s`)
	if log := proxyLogSince(t, offset); !restarted.MatchString(log) {
		t.Errorf("the proxy log does not show the supervisor restarting pid %d", child)
	}
}

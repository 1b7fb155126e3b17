package kit

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The kit's program owns its processes (issue 21): an `up` that fails stops again, by
// PID, what it started, leaves running what it found running, and the next `up` brings
// the kit back whole. Here the failing part is node 2's kubelet, restarted with a
// configuration kubelet refuses (`--kubelet-config-patch`, only for the kubelets this
// `up` starts), and the scheduler, which that `up` had started before it.
func TestFailedUpStopsWhatItStarted(t *testing.T) {
	nodes := needNodes(t, 2)
	ctx := context2(t, 4*time.Minute)
	second := kit.Desc.Nodes[1]
	schedulerFile, kubeletFile := kit.Desc.PidFiles["kube-scheduler"], second.PidFiles.Kubelet
	// What the failed up finds running and must leave running: the control plane, the
	// first node's kubelet, and node 2's other parts.
	running := map[string]int{
		"kube-apiserver":           pidFile(t, kit.Desc.PidFiles["kube-apiserver"]),
		"the first node's kubelet": pidFile(t, kit.FirstNode().PidFiles.Kubelet),
		"node 2's containerd":      pidFile(t, second.PidFiles.Containerd),
	}
	if kit.Desc.Mode == "nri" {
		running["node 2's proxy"] = pidFile(t, second.PidFiles.Proxy)
		running["node 2's regcred-nri"] = pidFile(t, second.PidFiles.NRI)
	}
	// Whatever happens below, the next tests find the kit whole.
	t.Cleanup(func() {
		if out, err := kit.Cluster(context.Background(), "up"); err != nil {
			t.Errorf("bringing the kit back after the test: %v\n%s", err, out)
		}
	})
	killAndWait(t, pidFile(t, schedulerFile))
	killAndWait(t, pidFile(t, kubeletFile))

	patch := filepath.Join(t.TempDir(), "bad-kubelet-config.yaml")
	if err := os.WriteFile(patch, []byte("port: 70000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := kit.Cluster(ctx, "up", "--kubelet-config-patch", patch)
	if err == nil {
		t.Fatalf("up with a kubelet configuration kubelet refuses succeeded:\n%s", out)
	}
	if want := "kubelet-2 exited while waiting for node " + nodes[1] + " Ready"; !strings.Contains(out, want) {
		t.Errorf("the failed up does not say %q:\n%s", want, out)
	}
	if want := "up failed: stopped what it had started (kube-scheduler)"; !strings.Contains(out, want) {
		t.Errorf("the failed up does not say %q:\n%s", want, out)
	}
	for _, file := range []string{schedulerFile, kubeletFile} {
		if _, err := os.Stat(file); !os.IsNotExist(err) {
			t.Errorf("%s is still there after the failed up (err %v)", file, err)
		}
	}
	for what, pid := range running {
		if err := syscall.Kill(pid, 0); err != nil {
			t.Errorf("%s (pid %d), running before the failed up, is gone: %v", what, pid, err)
		}
	}

	if out, err := kit.Cluster(ctx, "up"); err != nil {
		t.Fatalf("up after the failed one: %v\n%s", err, out)
	}
	for _, file := range []string{schedulerFile, kubeletFile} {
		if pid := pidFile(t, file); syscall.Kill(pid, 0) != nil {
			t.Errorf("%s names pid %d, which is not running after up", file, pid)
		}
	}
}

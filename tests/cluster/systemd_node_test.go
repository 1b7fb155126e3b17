package kit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// systemdNode is a node that boots systemd (scripts/nspawn-node up --join: Debian 12
// under systemd-nspawn, containerd 2.3 and kubelet as systemd services, kubeadm's file
// layout) registered with the kit's API server, tainted and labelled
// regcred.dev/systemd-node=true.
type systemdNode struct {
	name string
	dir  string
	init int
}

// joinSystemdNode boots the node and waits until it is Ready. It is powered off and its
// Node object deleted when the test ends, on every path.
func joinSystemdNode(t *testing.T, ctx context.Context, name string) *systemdNode {
	t.Helper()
	top := mustAbs(t, filepath.Join("..", ".."))
	script := filepath.Join(top, "scripts", "nspawn-node")
	scratch := filepath.Join(top, "target", "nspawn-test")
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		t.Fatal(err)
	}
	n := &systemdNode{name: name, dir: filepath.Join(scratch, fmt.Sprintf("join-%d", os.Getpid()))}
	t.Cleanup(func() {
		if os.Getenv("REGCRED_KEEP_SYSTEMD_NODE") == "1" && t.Failed() {
			t.Logf("REGCRED_KEEP_SYSTEMD_NODE=1: the node is left running in %s (PID 1: %d); scripts/nspawn-node down %s, then delete Node %s",
				n.dir, n.init, n.dir, name)
			return
		}
		if out, err := exec.Command(script, "down", n.dir).CombinedOutput(); err != nil {
			t.Errorf("scripts/nspawn-node down %s: %v\n%s", n.dir, err, out)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := kit.Client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting Node %s: %v", name, err)
		}
	})
	cmd := exec.CommandContext(ctx, script, "up", n.dir, "--join", kit.Dir, "--name", name)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/nspawn-node up --join: %v\n%s", err, stderr.String())
	}
	if n.init, err = strconv.Atoi(strings.TrimSpace(string(out))); err != nil {
		t.Fatalf("scripts/nspawn-node up printed %q, not the node's PID 1", out)
	}
	err = wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		node, err := kit.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("node %s did not become Ready within 2 minutes; its kubelet:\n%s", name, n.journal(t, "kubelet", 40))
	}
	return n
}

func (n *systemdNode) root() string { return filepath.Join(n.dir, "root") }

// run runs a program in the node (all of its PID 1's namespaces).
func (n *systemdNode) run(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(n.init), "-a"}, args...)...).CombinedOutput()
	return string(out), err
}

// journal is the last lines of a unit's journal in the node, for failure messages.
func (n *systemdNode) journal(t *testing.T, unit string, lines int) string {
	args := []string{"journalctl", "--no-pager", "-o", "short-precise", "-n", strconv.Itoa(lines)}
	if unit != "" {
		args = append(args, "-u", unit)
	}
	out, err := n.run(context.Background(), args...)
	if err != nil {
		return fmt.Sprintf("(journalctl -u %s: %v) %s", unit, err, out)
	}
	return out
}

// mainPID is a service's main process in the node ("0" when it runs none).
func (n *systemdNode) mainPID(t *testing.T, ctx context.Context, unit string) string {
	t.Helper()
	out, err := n.run(ctx, "systemctl", "show", "--property=MainPID", "--value", unit)
	if err != nil {
		t.Fatalf("systemctl show %s: %v\n%s", unit, err, out)
	}
	return strings.TrimSpace(out)
}

// nodeFiles is every file and link under the node's kubelet, containerd and systemd
// configuration (and the binaries and state regcred adds), path -> content or link target.
func (n *systemdNode) files(t *testing.T) map[string]string {
	t.Helper()
	files := map[string]string{}
	for _, top := range []string{"etc/containerd", "etc/kubernetes", "var/lib/kubelet/config.yaml", "etc/systemd/system", "opt/regcred", "var/lib/regcred/node-install"} {
		err := filepath.WalkDir(filepath.Join(n.root(), top), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if os.IsNotExist(err) {
					return nil
				}
				return err
			}
			rel, _ := filepath.Rel(n.root(), path)
			switch {
			case d.Type()&fs.ModeSymlink != 0:
				target, err := os.Readlink(path)
				if err != nil {
					return err
				}
				files[rel] = "-> " + target
			case d.Type().IsRegular():
				data, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				sum := sha256.Sum256(data)
				files[rel] = hex.EncodeToString(sum[:])
			}
			return nil
		})
		if err != nil {
			t.Fatalf("reading the node's files under %s: %v", top, err)
		}
	}
	return files
}

// diffFiles names each path whose presence or content differs.
func diffFiles(before, after map[string]string) []string {
	var diff []string
	for path, was := range before {
		if now, ok := after[path]; !ok {
			diff = append(diff, "removed "+path)
		} else if now != was {
			diff = append(diff, "changed "+path)
		}
	}
	for path := range after {
		if _, ok := before[path]; !ok {
			diff = append(diff, "added "+path)
		}
	}
	slices.Sort(diff)
	return diff
}

// installerReady waits until the node's installer pod (of daemonSet) is Ready, running
// image, and returns it.
func installerReady(t *testing.T, ctx context.Context, node *systemdNode, daemonSet, image string) *corev1.Pod {
	t.Helper()
	var last *corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, time.Second, 4*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := kit.Client.CoreV1().Pods(deployNamespace).List(ctx, metav1.ListOptions{
			LabelSelector: "app.kubernetes.io/name=" + daemonSet,
			FieldSelector: "spec.nodeName=" + node.name,
		})
		if err != nil {
			return false, nil
		}
		for i := range list.Items {
			p := &list.Items[i]
			if p.DeletionTimestamp != nil || p.Spec.Containers[0].Image != image {
				continue
			}
			last = p
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					return true, nil
				}
			}
		}
		return false, nil
	})
	if err != nil {
		logs, _ := exec.CommandContext(context.Background(), kit.Env["REGCRED_CLUSTER_KUBECTL"], "--kubeconfig", kit.Env["REGCRED_CLUSTER_KUBECONFIG"],
			"logs", "-n", deployNamespace, "-l", "app.kubernetes.io/name="+daemonSet, "--tail=40").CombinedOutput()
		state := "no pod"
		if last != nil {
			state = kit.Describe(deployNamespace, last.Name, last)
		}
		t.Fatalf("%s on %s running %s is not Ready: %s\nits log:\n%s%s", daemonSet, node.name, image,
			state, logs, regcredPods(ctx))
	}
	return last
}

// The chart's node installer on a node that boots systemd, joined to the kit's API server
// as a kubeadm node is (docs/node-install.md; README "Install with Helm"):
//   - `helm install` with node.installer.enabled: the installer DaemonSet's pod on the
//     node runs `regcred node install` there; the node agent and regcred-nri run as the
//     node's systemd services, kubelet reads the drop-in; a private pod with its own
//     credentials runs on the node, and one without them, of the same image now on the
//     node, is refused by regcred-nri at container creation.
//   - `helm upgrade` to another build of regcred's image (the glibc build of the same
//     version, so every binary the installer puts on the node changes): the installer
//     rolls onto the node, the agent is restarted with the new binary, and the private
//     pods (each with a new Secret) created throughout, one a second, all run with no
//     Warning event.
//   - `helm uninstall`: the pre-delete clean-up runs `regcred node uninstall` on the node
//     first; its kubelet, containerd and systemd files are byte for byte what they were
//     before the install, and a pod still starts there.
//
// The node is the only one the installer selects (the kit's own nodes have no systemd);
// "one node at a time" is the DaemonSet's maxUnavailable, which one node cannot show.
func TestHelmChartInstallsASystemdNode(t *testing.T) {
	requireBareKit(t)
	ctx := context2(t, 15*time.Minute)
	top := mustAbs(t, filepath.Join("..", ".."))
	chart := filepath.Join(top, "deploy", "chart")
	// A name of its own: pods left bound to a node of an earlier run (a failed test
	// keeps its namespace) would come back with the name.
	node := joinSystemdNode(t, ctx, "regcred-systemd-"+RandomSuffix())
	before := node.files(t)

	repository, _, _ := pushRegcredImage(t, ctx)
	imageA := repository + ":" + deployImageTag
	const tagB = deployImageTag + "-gnu"
	_, _, _ = pushRegcredImageAs(t, ctx, tagB, "--libc", "gnu")
	imageB := repository + ":" + tagB

	t.Cleanup(func() { uninstallRelease(t, 200*time.Second) })

	// 1. Install: the webhook on the kit's nodes, the installer on the systemd node.
	started := time.Now()
	out, err := helm(ctx, "install", "regcred", chart, "--namespace", deployNamespace, "--take-ownership",
		"--set", "image.repository="+repository, "--set", "image.tag="+deployImageTag,
		"--set", "node.mode=nri", "--set", "node.installer.enabled=true",
		"--set-json", `node.installer.nodeSelector={"regcred.dev/systemd-node":"true"}`,
		"--wait", "--timeout", "5m")
	if err != nil {
		t.Fatalf("helm install: %v\n%s%s", err, out, regcredPods(ctx))
	}
	installer := installerReady(t, ctx, node, "regcred-node-installer", imageA)
	t.Logf("helm install --wait and the node installed in %s (installer pod %s)", time.Since(started).Round(time.Millisecond), installer.Name)
	for _, unit := range []string{"regcred-cri-proxy.service", "regcred-nri.service", "containerd.service", "kubelet.service"} {
		if out, err := node.run(ctx, "systemctl", "is-active", unit); err != nil {
			t.Errorf("%s on the node is not active after the install: %s\n%s", unit, strings.TrimSpace(out), node.journal(t, unit, 20))
		}
	}
	installed := node.files(t)
	if diff := diffFiles(before, installed); len(diff) == 0 {
		t.Fatal("the install changed no file on the node")
	} else {
		t.Logf("the install's files on the node: %v", diff)
	}
	agentBefore := node.mainPID(t, ctx, "regcred-cri-proxy.service")

	// 2. A private pod with its credentials runs on the node, through the installed agent;
	// the same image without them is refused at creation.
	ns := namespace(t, ctx)
	basic := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"]
	private := basic + "/" + kit.Desc.Images.Hello.Name
	mustSecret(t, ctx, ns, "creds", map[string]string{"serverAddress": basic, "username": user(), "password": password()})
	runPod(t, ctx, ns, onNode(kit.PodSpec("private", private, "creds"), node.name))
	if journal := node.journal(t, "regcred-cri-proxy", 200); !strings.Contains(journal, ns+"/private") {
		t.Errorf("the node agent's journal does not name the pod %s/private:\n%s", ns, journal)
	}
	event := failCreate(t, ctx, ns, ifNotPresent(onNode(kit.PodSpec("no-creds", private), node.name)),
		regexp.QuoteMeta("regcred: pod "+ns+"/no-creds may not use image "+private))
	t.Logf("the pod without credentials: %s", event.Message)

	// 3. Upgrade to the other build with pods (each with its own new Secret) created
	// throughout, pinned to the node, pulling through its agent.
	churnCtx, stopChurn := context.WithCancel(ctx)
	var mu sync.Mutex
	var churned []string
	var failed []string
	churnDone := make(chan struct{})
	// Until 5 s after the upgrade is done, a pod a second (at most 90: the node takes
	// 110, and pods stay until the namespace goes).
	go func() {
		defer close(churnDone)
		for i := 0; churnCtx.Err() == nil && i < 90; i++ {
			name := fmt.Sprintf("churn-%d", i)
			_, err := kit.CreateRegcredSecret(churnCtx, ns, name, map[string]string{"serverAddress": basic, "username": user(), "password": password()})
			if err == nil {
				_, err = kit.CreatePod(churnCtx, ns, onNode(kit.PodSpec(name, private, name), node.name))
			}
			mu.Lock()
			if err == nil {
				churned = append(churned, name)
			} else if churnCtx.Err() == nil {
				failed = append(failed, fmt.Sprintf("%s: %v", name, err))
			}
			mu.Unlock()
			time.Sleep(time.Second)
		}
	}()
	time.Sleep(3 * time.Second)
	started = time.Now()
	out, err = helm(ctx, "upgrade", "regcred", chart, "--namespace", deployNamespace, "--reuse-values",
		"--set", "image.tag="+tagB, "--wait", "--timeout", "5m")
	if err != nil {
		stopChurn()
		<-churnDone
		t.Fatalf("helm upgrade: %v\n%s%s", err, out, regcredPods(ctx))
	}
	installerReady(t, ctx, node, "regcred-node-installer", imageB)
	t.Logf("helm upgrade --wait and the node reinstalled in %s", time.Since(started).Round(time.Millisecond))
	// Ready means this pod installed the node: the new agent runs already.
	agentAfter := node.mainPID(t, ctx, "regcred-cri-proxy.service")
	upgraded := node.files(t)
	time.Sleep(5 * time.Second)
	stopChurn()
	<-churnDone

	if agentAfter == agentBefore || agentAfter == "0" {
		t.Errorf("the node agent was not restarted by the upgrade (main PID %s, before %s)", agentAfter, agentBefore)
	}
	const binary = "opt/regcred/bin/regcred"
	if upgraded[binary] == "" || upgraded[binary] == installed[binary] {
		t.Errorf("the upgrade left the node's /%s as it was (%q): the two builds did not differ", binary, upgraded[binary])
	}
	if len(failed) > 0 {
		t.Errorf("%d creates failed during the upgrade, first: %s", len(failed), failed[0])
	}
	if len(churned) < 10 {
		t.Fatalf("only %d pods created during the upgrade: the churn did not run", len(churned))
	}
	// Every one runs (kubelet's back-off included, had any start failed).
	var notRunning []string
	_ = wait.PollUntilContextTimeout(ctx, 2*time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		notRunning = notRunning[:0]
		for _, name := range churned {
			pod, err := kit.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil || pod.Status.Phase != corev1.PodRunning {
				notRunning = append(notRunning, name)
			}
		}
		return len(notRunning) == 0, nil
	})
	// ... and none failed on the way (a failed pull or creation is a Warning event, then
	// kubelet's back-off and a retry that may succeed).
	for _, name := range churned {
		events, err := kit.PodEvents(ctx, ns, name)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			if e.Type == corev1.EventTypeWarning && e.Reason != "MissingClusterDNS" {
				t.Errorf("pod %s, created during the upgrade: %s %s", name, e.Reason, e.Message)
			}
		}
	}
	for i, name := range notRunning {
		if i == 3 {
			t.Errorf("... and %d more", len(notRunning)-3)
			break
		}
		pod, _ := kit.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		t.Errorf("pod %s, created during the upgrade, is not Running: %s", name, kit.Describe(ns, name, pod))
	}
	t.Logf("churn: %d pods (each with a new Secret) created during the upgrade, %d create failures; agent main PID %s -> %s",
		len(churned), len(failed), agentBefore, agentAfter)
	if t.Failed() {
		t.FailNow()
	}

	// 4. Uninstall: the clean-up hook puts the node back as it was.
	started = time.Now()
	out, err = helm(ctx, "uninstall", "regcred", "--namespace", deployNamespace, "--wait", "--timeout", "200s")
	if err != nil {
		t.Fatalf("helm uninstall: %v\n%s%s", err, out, regcredPods(ctx))
	}
	t.Logf("helm uninstall --wait (with the node's clean-up) in %s", time.Since(started).Round(time.Millisecond))
	if diff := diffFiles(before, node.files(t)); len(diff) > 0 {
		t.Errorf("after helm uninstall the node's files differ from before the install: %v\nthe node's journal:\n%s", diff, node.journal(t, "", 150))
	}
	for _, unit := range []string{"regcred-cri-proxy.service", "regcred-nri.service"} {
		if out, err := node.run(ctx, "systemctl", "is-active", unit); err == nil {
			t.Errorf("%s still active after the uninstall: %s", unit, out)
		}
	}
	for _, unit := range []string{"containerd.service", "kubelet.service"} {
		if out, err := node.run(ctx, "systemctl", "is-active", unit); err != nil {
			t.Errorf("%s on the node is not active after the uninstall: %s\n%s", unit, strings.TrimSpace(out), node.journal(t, unit, 20))
		}
	}
	// kubelet pulls by itself again: a Secret it reads.
	if _, err := kit.CreateDockerConfigSecret(ctx, ns, "docker-creds", basic, user(), password()); err != nil {
		t.Fatal(err)
	}
	runPod(t, ctx, ns, onNode(kit.PodSpec("after", private, "docker-creds"), node.name))
}

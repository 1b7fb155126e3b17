package kit

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// The tests of this file need a kit of two nodes or more (scripts/test brings up two).
func needNodes(t *testing.T, n int) []string {
	t.Helper()
	nodes := kit.Nodes()
	if len(nodes) < n {
		t.Fatalf("this test needs a kit of %d nodes; %s has %d (%v): bring it up with `scripts/cluster up --nodes %d`",
			n, kit.Dir, len(nodes), nodes, n)
	}
	return nodes
}

// onNode is pod pinned to node instead of the kit's first node.
func onNode(pod *corev1.Pod, node string) *corev1.Pod {
	pod.Spec.NodeName = node
	return pod
}

// Every node of the kit is Ready and runs the runtime cluster.env names
// (REGCRED_CLUSTER_RUNTIME, e.g. "containerd 2.3.7") and the kubelet of the kit's
// Kubernetes release (kit.json), as kubelet reports them.
func TestEveryNodeReadyOnTheKitsRuntime(t *testing.T) {
	ctx := context2(t, time.Minute)
	runtime := kit.Env["REGCRED_CLUSTER_RUNTIME"]
	name, version, ok := strings.Cut(runtime, " ")
	if !ok || name != "containerd" || version == "" {
		t.Fatalf("REGCRED_CLUSTER_RUNTIME is %q, want \"containerd VERSION\"", runtime)
	}
	list, err := kit.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, node := range list.Items {
		names = append(names, node.Name)
		if got, want := node.Status.NodeInfo.ContainerRuntimeVersion, "containerd://"+version; got != want {
			t.Errorf("node %s runs %q, want %q", node.Name, got, want)
		}
		if got, want := node.Status.NodeInfo.KubeletVersion, kit.Desc.Kubernetes; got != want {
			t.Errorf("node %s runs kubelet %q, the kit says %q", node.Name, got, want)
		}
		ready := false
		for _, c := range node.Status.Conditions {
			ready = ready || c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue
		}
		if !ready {
			t.Errorf("node %s is not Ready: %+v", node.Name, node.Status.Conditions)
		}
	}
	slices.Sort(names)
	want := slices.Clone(kit.Nodes())
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("the API server has nodes %v, cluster.env names %v", names, want)
	}
	t.Logf("%d nodes Ready on %s, kubelet %s", len(names), runtime, kit.Desc.Kubernetes)
}

// The Node authorizer gives a node's credentials (those its regcred proxy reads the API
// with by default) the Secrets of the pods bound to that node, and nothing of another
// node's pods: node 1's identity is refused the Secret of a pod on node 2, while the pod
// on node 2 runs with that Secret through node 2's own proxy.
func TestNodeAuthorizerAcrossNodes(t *testing.T) {
	nodes := needNodes(t, 2)
	ctx := context2(t, 3*time.Minute)
	ns := namespace(t, ctx)
	mustSecret(t, ctx, ns, "creds", map[string]string{
		"serverAddress": kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"], "username": user(), "password": password(),
	})
	before := nodeProxyLogSize(t, 2)
	runPod(t, ctx, ns, onNode(kit.PodSpec("b", kit.Image("BASIC"), "creds"), nodes[1]))
	if log := nodeProxyLogSince(t, 2, before); len(proxyLines(log, ns, "b")) == 0 {
		t.Errorf("node %s's proxy logged nothing about pod %s/b:\n%s", nodes[1], ns, log)
	}

	read := func(i int) error {
		config, err := clientcmd.BuildConfigFromFlags("", kit.Desc.Nodes[i-1].KubeletKubeconfig)
		if err != nil {
			t.Fatalf("node %d's kubeconfig: %v", i, err)
		}
		client, err := kubernetes.NewForConfig(config)
		if err != nil {
			t.Fatal(err)
		}
		_, err = client.CoreV1().Secrets(ns).Get(ctx, "creds", metav1.GetOptions{})
		return err
	}
	// The Node authorizer learns of the binding from its graph: allow it a moment.
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return read(2) == nil, nil
	}); err != nil {
		t.Fatalf("node %s may not read the Secret of its own pod: %v", nodes[1], read(2))
	}
	if err := read(1); !IsForbidden(err) {
		t.Fatalf("node %s read the Secret of a pod on %s: err = %v, want Forbidden", nodes[0], nodes[1], err)
	}
}

// A DaemonSet's pods land on every node and run there (the image comes from the kit's
// anonymous registry, through each node's own proxy).
func TestDaemonSetOnEveryNode(t *testing.T) {
	nodes := needNodes(t, 2)
	ctx := context2(t, 3*time.Minute)
	ns := namespace(t, ctx)
	grace := int64(1)
	labels := map[string]string{"app": "everywhere"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "everywhere"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: &grace,
					Containers: []corev1.Container{{
						Name: "hello", Image: kit.Env["REGCRED_CLUSTER_PUBLIC_REGISTRY"] + "/" + kit.Desc.Images.Open.Name,
						ImagePullPolicy: corev1.PullIfNotPresent,
					}},
				},
			},
		},
	}
	if kit.Desc.Images.Open.Name == "" {
		t.Fatalf("the kit's kit.json has no open image: %+v", kit.Desc.Images)
	}
	if _, err := kit.Client.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var last *appsv1.DaemonSet
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		d, err := kit.Client.AppsV1().DaemonSets(ns).Get(ctx, "everywhere", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = d
		return d.Status.DesiredNumberScheduled == int32(len(nodes)) && d.Status.NumberReady == int32(len(nodes)), nil
	})
	if err != nil {
		t.Fatalf("the DaemonSet is not Ready on %d nodes: %+v", len(nodes), last.Status)
	}
	pods, err := kit.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=everywhere"})
	if err != nil {
		t.Fatal(err)
	}
	var on []string
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning {
			on = append(on, p.Spec.NodeName)
		}
	}
	slices.Sort(on)
	want := slices.Clone(nodes)
	slices.Sort(want)
	if !slices.Equal(on, want) {
		t.Errorf("the DaemonSet's running pods are on %v, want one on each of %v", on, want)
	}
}

// An image is private to the node that pulled it: after a pod on node 1 pulled
// private/cached with its Secret, node 2's containerd does not have it, a pod on node 2
// without credentials is refused by the registry, and one with its own Secret runs.
func TestPrivateImagePulledOnOneNodeIsNotOnAnother(t *testing.T) {
	nodes := needNodes(t, 2)
	ctx := context2(t, 4*time.Minute)
	ns := namespace(t, ctx)
	image := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"] + "/" + kit.Desc.Images.Cached.Name
	mustSecret(t, ctx, ns, "creds", map[string]string{
		"serverAddress": kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"], "username": user(), "password": password(),
	})
	a := kit.PodSpec("a", image, "creds")
	a.Spec.Containers[0].ImagePullPolicy = corev1.PullIfNotPresent
	runPod(t, ctx, ns, a)

	listed, err := exec.CommandContext(ctx, kit.Ctr(), "--address", kit.Desc.Nodes[1].ContainerdSocket,
		"-n", "k8s.io", "images", "ls", "-q").CombinedOutput()
	if err != nil {
		t.Fatalf("ctr images ls on %s: %v\n%s", nodes[1], err, listed)
	}
	if strings.Contains(string(listed), image) {
		// An earlier test on node 2 may have pulled it: remove it so the case holds.
		if out, err := exec.CommandContext(ctx, kit.Ctr(), "--address", kit.Desc.Nodes[1].ContainerdSocket,
			"-n", "k8s.io", "images", "rm", image).CombinedOutput(); err != nil {
			t.Fatalf("ctr images rm on %s: %v\n%s", nodes[1], err, out)
		}
	}

	b := onNode(kit.PodSpec("b", image), nodes[1])
	b.Spec.Containers[0].ImagePullPolicy = corev1.PullIfNotPresent
	failPod(t, ctx, ns, b, anonymousRefusal)

	c := onNode(kit.PodSpec("c", image, "creds"), nodes[1])
	c.Spec.Containers[0].ImagePullPolicy = corev1.PullIfNotPresent
	runPod(t, ctx, ns, c)
}

// Pods on different nodes reach each other: a pod on node 2 serves HTTP, a pod on node 1
// fetches from its pod IP (routed from node 1's bridge to node 2's by the host).
func TestPodsReachEachOtherAcrossNodes(t *testing.T) {
	nodes := needNodes(t, 2)
	ctx := context2(t, 3*time.Minute)
	ns := namespace(t, ctx)
	image := kit.Env["REGCRED_CLUSTER_PUBLIC_REGISTRY"] + "/" + kit.Desc.Images.Open.Name
	marker := "reached-" + RandomSuffix()
	server := onNode(kit.PodSpec("server", image), nodes[1])
	server.Spec.Containers[0].Command = []string{"/bin/busybox", "sh", "-c",
		fmt.Sprintf("mkdir -p /tmp/www && echo %s > /tmp/www/index.html && exec /bin/busybox httpd -f -p 8080 -h /tmp/www", marker)}
	running := runPod(t, ctx, ns, server)
	if running.Status.PodIP == "" {
		t.Fatalf("the server pod has no IP")
	}

	client := kit.PodSpec("client", image)
	client.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
	// busybox nc, not wget: Debian's static busybox wget crashes (SIGSEGV) here, on the
	// host as in a pod.
	client.Spec.Containers[0].Command = []string{"/bin/busybox", "sh", "-c",
		fmt.Sprintf(`printf 'GET /index.html HTTP/1.0\r\n\r\n' | /bin/busybox nc -w 5 %s 8080`, running.Status.PodIP)}
	if _, err := kit.CreatePod(ctx, ns, client); err != nil {
		t.Fatal(err)
	}
	var last *corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := kit.Client.CoreV1().Pods(ns).Get(ctx, "client", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = p
		return p.Status.Phase == corev1.PodSucceeded, nil
	})
	if err != nil {
		t.Fatalf("the client on %s did not fetch from %s on %s: %s", nodes[0], running.Status.PodIP, nodes[1], kit.Describe(ns, "client", last))
	}
	logs, err := kit.Client.CoreV1().Pods(ns).GetLogs("client", &corev1.PodLogOptions{}).DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logs), marker) {
		t.Errorf("the client fetched %q, want %q", logs, marker)
	}
}

// nodeProxyLogSize is the size of node i's proxy log (1 is the first node).
func nodeProxyLogSize(t *testing.T, i int) int64 {
	t.Helper()
	info, err := os.Stat(kit.Desc.Nodes[i-1].Logs.Proxy)
	if err != nil {
		t.Fatal(err)
	}
	return info.Size()
}

// nodeProxyLogSince is what node i's proxy logged after offset.
func nodeProxyLogSince(t *testing.T, i int, offset int64) string {
	t.Helper()
	data, err := os.ReadFile(kit.Desc.Nodes[i-1].Logs.Proxy)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) < offset {
		return string(data)
	}
	return string(data[offset:])
}

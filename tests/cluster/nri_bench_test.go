package kit

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"
)

// BenchmarkNRICreateContainer: what regcred's NRI check adds to a container creation, and
// what kubelet's relist costs in each mode. On the kit's last node, whose kubelet is
// paused for the run (SIGSTOP: it would otherwise remove a sandbox it did not make), the
// benchmark creates and removes a container of a private image in a sandbox of a pod on
// record (allowed the image before: `pod_on_record`), with kubelet's own CRI client:
//
//   - with-regcred: regcred-nri connected (the benchmark runs the kit's binary itself),
//   - noop-plugin: the same plugin asking a do-nothing agent that allows at once,
//   - without: no plugin (the sandbox carries the toleration annotation, so containerd's
//     default validator lets it through), in alternating blocks of 25.
//
// And ListPodSandbox/ListContainers straight to containerd (kubelet's path in NRI mode)
// vs through the agent's socket (its path in the legacy runtime-proxy mode).
// Run with: go test -run '^$' -bench NRICreateContainer -benchtime 1x (BENCHMARKS.md).
func BenchmarkNRICreateContainer(b *testing.B) {
	if kit.Desc.Mode != "nri" {
		b.Skipf("the kit runs in %q mode; this benchmark is of NRI mode", kit.Desc.Mode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	node := kit.Desc.Nodes[len(kit.Desc.Nodes)-1]
	ns, err := kit.CreateNamespace(ctx, "bench-nri")
	if err != nil {
		b.Fatal(err)
	}
	defer kit.DeleteNamespace(ns)
	basic := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"]
	if _, err := kit.CreateRegcredSecret(ctx, ns, "creds", map[string]string{
		"serverAddress": basic, "username": user(), "password": password(),
	}); err != nil {
		b.Fatal(err)
	}
	image := kit.Image("BASIC")
	pod := kit.PodSpec("on-record", image, "creds")
	pod.Spec.NodeName = node.Name
	if _, err := kit.CreatePod(ctx, ns, pod); err != nil {
		b.Fatal(err)
	}
	running, err := kit.WaitRunning(ctx, ns, pod.Name, runTimeout)
	if err != nil {
		b.Fatal(err)
	}
	decisionsBefore := agentDecisions(b, node)
	b.ResetTimer()
	times := nriCreateTimes(b, ctx, node, running, image, true)
	b.StopTimer()
	// The agent's own view of the same creations (as BenchmarkFullNode prints it).
	b.Logf("the agent's NRI decisions during the creations: %s", decisionsBetween(decisionsBefore, agentDecisions(b, node)))
	for _, name := range []string{"with-regcred", "noop-plugin", "without", "relist-direct", "relist-via-agent"} {
		d := times[name]
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		p50, p99 := d[len(d)/2], d[len(d)*99/100]
		b.ReportMetric(float64(p50.Microseconds()), name+"-p50-µs")
		b.ReportMetric(float64(p99.Microseconds()), name+"-p99-µs")
	}
	p := func(name string, q int) float64 {
		d := times[name]
		return float64(d[len(d)*q/100].Microseconds())
	}
	b.ReportMetric(p("with-regcred", 50)-p("without", 50), "added-p50-µs")
	b.ReportMetric(p("with-regcred", 99)-p("without", 99), "added-p99-µs")
	b.ReportMetric(p("noop-plugin", 50)-p("without", 50), "nri-hop-p50-µs")
	b.ReportMetric(p("with-regcred", 50)-p("noop-plugin", 50), "regcred-decision-p50-µs")
	b.ReportMetric(p("relist-via-agent", 50)/p("relist-direct", 50), "relist-agent/direct")
}

// nriCreateTimes creates and removes containers of image in a new sandbox of running (a
// pod on node that regcred allowed the image before) in alternating blocks of 25, with
// kubelet's own CRI client: with the kit's regcred-nri, with the same plugin asking a
// do-nothing agent, and with no plugin; and, when relist is set, times
// ListPodSandbox+ListContainers straight to containerd and through the agent. node's
// kubelet is paused meanwhile and its regcred-nri stopped; both come back on every path.
// The times are in the order taken, by arm.
func nriCreateTimes(b *testing.B, ctx context.Context, node NodeDescription, running *corev1.Pod, image string, relist bool) map[string][]time.Duration {
	b.Helper()
	ns := running.Namespace
	runtime, err := remote.NewRemoteRuntimeService(ctx, "unix://"+node.ContainerdSocket, 10*time.Second, nil, false)
	if err != nil {
		b.Fatal(err)
	}
	viaAgent, err := remote.NewRemoteRuntimeService(ctx, "unix://"+node.ProxySocket, 10*time.Second, nil, false)
	if err != nil {
		b.Fatal(err)
	}
	images, err := remote.NewRemoteImageService(ctx, "unix://"+node.ContainerdSocket, 10*time.Second, nil, false)
	if err != nil {
		b.Fatal(err)
	}
	status, err := images.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: image}, false)
	if err != nil || status.GetImage() == nil {
		b.Fatalf("the image %s on %s: %v", image, node.Name, err)
	}
	imageID := status.GetImage().GetId()

	// kubelet paused for the run, resumed on every path.
	kubelet := pidFile(b, node.PidFiles.Kubelet)
	if err := syscall.Kill(kubelet, syscall.SIGSTOP); err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := syscall.Kill(kubelet, syscall.SIGCONT); err != nil {
			b.Errorf("resuming kubelet: %v", err)
		}
	}()
	// The kit's plugin out of the way; the benchmark starts and stops its own, and `up`
	// starts the kit's again at the end.
	killAndWait(b, pidFile(b, node.PidFiles.NRI))
	defer func() {
		if out, err := kit.ClusterEnv(context.Background(), []string{"REGCRED_KIT_NO_BUILD=1"}, "up"); err != nil {
			b.Errorf("bringing the kit's regcred-nri back: %v\n%s", err, out)
		}
	}()

	sandboxConfig := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: running.Name, Namespace: ns, Uid: string(running.UID), Attempt: 7},
		Annotations: map[string]string{
			kit.Desc.NRITolerationAnnotation + "/pod": "true",
		},
		LogDirectory: b.TempDir(),
		Linux:        &runtimeapi.LinuxPodSandboxConfig{},
	}
	sandbox, err := runtime.RunPodSandbox(ctx, sandboxConfig, "")
	if err != nil {
		b.Fatalf("RunPodSandbox: %v", err)
	}
	defer func() {
		_ = runtime.StopPodSandbox(context.Background(), sandbox)
		_ = runtime.RemovePodSandbox(context.Background(), sandbox)
	}()
	create := func(i int) time.Duration {
		config := &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: fmt.Sprintf("bench-%d", i)},
			Image:    &runtimeapi.ImageSpec{Image: imageID, UserSpecifiedImage: image},
			Command:  []string{"/bin/busybox", "true"},
			LogPath:  fmt.Sprintf("bench-%d.log", i),
			Linux:    &runtimeapi.LinuxContainerConfig{},
		}
		started := time.Now()
		id, err := runtime.CreateContainer(ctx, sandbox, config, sandboxConfig)
		took := time.Since(started)
		if err != nil {
			b.Fatalf("CreateContainer %d: %v", i, err)
		}
		if err := runtime.RemoveContainer(ctx, id); err != nil {
			b.Fatalf("RemoveContainer %d: %v", i, err)
		}
		return took
	}

	const rounds, block = 8, 25
	times := map[string][]time.Duration{}
	// The third arm: the same plugin binary asking a do-nothing agent that allows at once
	// (NRI's validator round trip and the plugin's question, without regcred's decision).
	noop := noopAgent(b)
	for round := 0; round < rounds; round++ {
		plugin := startPlugin(b, node, "unix://"+node.DecisionsSocket)
		for i := 0; i < block; i++ {
			times["with-regcred"] = append(times["with-regcred"], create(round*1000+i))
		}
		plugin()
		plugin = startPlugin(b, node, "unix://"+noop)
		b.StopTimer()
		warmUp(b, ctx, runtime, sandbox, sandboxConfig, imageID, image, round+100)
		b.StartTimer()
		for i := 0; i < block; i++ {
			times["noop-plugin"] = append(times["noop-plugin"], create(round*1000+250+i))
		}
		plugin()
		// containerd drops a plugin whose connection closed at the end of the next request,
		// which the gone plugin fails (fail closed): one creation, not counted.
		b.StopTimer()
		warmUp(b, ctx, runtime, sandbox, sandboxConfig, imageID, image, round)
		b.StartTimer()
		for i := 0; i < block; i++ {
			times["without"] = append(times["without"], create(round*1000+500+i))
		}
	}
	for i := 0; relist && i < rounds*block; i++ {
		for name, client := range map[string]interface {
			ListPodSandbox(context.Context, *runtimeapi.PodSandboxFilter) ([]*runtimeapi.PodSandbox, error)
			ListContainers(context.Context, *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error)
		}{"relist-direct": runtime, "relist-via-agent": viaAgent} {
			started := time.Now()
			if _, err := client.ListPodSandbox(ctx, nil); err != nil {
				b.Fatal(err)
			}
			if _, err := client.ListContainers(ctx, nil); err != nil {
				b.Fatal(err)
			}
			times[name] = append(times[name], time.Since(started))
		}
	}
	return times
}

// warmUp creates (and removes) one container, failing or not.
func warmUp(b *testing.B, ctx context.Context, runtime interface {
	CreateContainer(context.Context, string, *runtimeapi.ContainerConfig, *runtimeapi.PodSandboxConfig) (string, error)
	RemoveContainer(context.Context, string) error
}, sandbox string, sandboxConfig *runtimeapi.PodSandboxConfig, imageID, image string, round int) {
	b.Helper()
	config := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: fmt.Sprintf("warm-up-%d", round)},
		Image:    &runtimeapi.ImageSpec{Image: imageID, UserSpecifiedImage: image},
		Command:  []string{"/bin/busybox", "true"},
		Linux:    &runtimeapi.LinuxContainerConfig{},
	}
	if id, err := runtime.CreateContainer(ctx, sandbox, config, sandboxConfig); err == nil {
		_ = runtime.RemoveContainer(ctx, id)
	}
}

// noopAgent serves an agent that allows every container at once, on a unix socket it
// returns; it stops when the benchmark ends.
func noopAgent(b *testing.B) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "noop.sock")
	listener, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	server := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"allowed":true,"decision":"noop"}`))
	})}
	go func() { _ = server.Serve(listener) }()
	b.Cleanup(func() { _ = server.Close() })
	return path
}

// startPlugin runs regcred-nri for the node until the returned function stops it; it
// returns once containerd has registered it.
func startPlugin(b *testing.B, node NodeDescription, agent string) func() {
	b.Helper()
	cmd := exec.Command(kit.Desc.Binaries.RegcredNri, "--nri-socket", node.NRISocket, "--agent", agent)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	started := make(chan struct{})
	go func() {
		scanner := bufio.NewScanner(stderr)
		said := false
		for scanner.Scan() {
			if !said && strings.Contains(scanner.Text(), "Started plugin") {
				said = true
				close(started)
			}
		}
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		b.Fatal("regcred-nri did not register within 10 s")
	}
	return func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}
}

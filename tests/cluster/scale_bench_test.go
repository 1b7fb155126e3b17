package kit

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// The node-scale benchmarks (issue 26). scripts/scale-bench brings up the kit each needs,
// runs it, and brings the kit down; run alone they use whatever kit REGCRED_CLUSTER_ENV
// names. Every figure goes to standard output as a `scale:` line.

// The two kinds of pull Secret a roll-out's pods carry; each is also the Secret's name.
const (
	halfRegcred = "regcredentials"
	halfDocker  = "dockerconfigjson"
)

func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: a whole number of 1 or more", name, v)
	}
	return n
}

func envList(name, def string) []string {
	v := os.Getenv(name)
	if v == "" {
		v = def
	}
	return strings.Split(v, ",")
}

// scaleSecrets makes the pull Secret of each half in ns, both for the kit's htpasswd
// registry and its user.
func scaleSecrets(b *testing.B, ctx context.Context, ns string, halves []string) {
	b.Helper()
	basic := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"]
	for _, half := range halves {
		var err error
		switch half {
		case halfRegcred:
			_, err = kit.CreateRegcredSecret(ctx, ns, half, map[string]string{
				"serverAddress": basic, "username": user(), "password": password(),
			})
		case halfDocker:
			_, err = kit.CreateDockerConfigSecret(ctx, ns, half, basic, user(), password())
		default:
			err = fmt.Errorf("REGCRED_BENCH_HALVES: %q is neither %s nor %s", half, halfRegcred, halfDocker)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}

// scaleDeployment is replicas pods of the kit's private image on node, with the pull
// Secret secret, as a roll-out makes them (IfNotPresent: the first pod on a node pulls,
// the others find the image there). probes adds exec readiness and liveness probes every
// 10 s (kubelet's probe traffic on a full node).
func scaleDeployment(name, node, secret string, replicas int32, probes bool) *appsv1.Deployment {
	grace := int64(1)
	automount, links := false, false
	labels := map[string]string{"app": name}
	container := corev1.Container{
		Name:            "hello",
		Image:           kit.Image("BASIC"),
		ImagePullPolicy: corev1.PullIfNotPresent,
	}
	if probes {
		probe := func() *corev1.Probe {
			return &corev1.Probe{
				ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/bin/busybox", "true"}}},
				PeriodSeconds: 10, TimeoutSeconds: 5,
			}
		}
		container.ReadinessProbe, container.LivenessProbe = probe(), probe()
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector:                  map[string]string{"kubernetes.io/hostname": node},
					TerminationGracePeriodSeconds: &grace,
					AutomountServiceAccountToken:  &automount,
					EnableServiceLinks:            &links,
					ImagePullSecrets:              []corev1.LocalObjectReference{{Name: secret}},
					Containers:                    []corev1.Container{container},
				},
			},
		},
	}
}

// podClock is when this process first saw each pod of a namespace (its creation, as the
// watch delivers it) and first saw it Running with every container running.
type podClock struct {
	mu      sync.Mutex
	added   map[string]time.Time
	running map[string]time.Time
	half    map[string]string
	stop    chan struct{}
}

// watchPods starts the clock of ns's pods; each pod's half is its app label less the
// node suffix.
func watchPods(b *testing.B, ns string) *podClock {
	b.Helper()
	c := &podClock{added: map[string]time.Time{}, running: map[string]time.Time{}, half: map[string]string{}, stop: make(chan struct{})}
	factory := informers.NewSharedInformerFactoryWithOptions(kit.Client, 0, informers.WithNamespace(ns))
	informer := factory.Core().V1().Pods().Informer()
	see := func(obj any) {
		now := time.Now()
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if _, seen := c.added[pod.Name]; !seen {
			c.added[pod.Name] = now
			app := pod.Labels["app"]
			c.half[pod.Name] = app[:max(strings.LastIndex(app, "-"), 0)]
		}
		if _, seen := c.running[pod.Name]; !seen && podRunning(pod) {
			c.running[pod.Name] = now
		}
	}
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    see,
		UpdateFunc: func(_, obj any) { see(obj) },
	}); err != nil {
		b.Fatal(err)
	}
	factory.Start(c.stop)
	if !cache.WaitForCacheSync(c.stop, informer.HasSynced) {
		b.Fatal("the pod informer did not sync")
	}
	return c
}

func podRunning(pod *corev1.Pod) bool {
	if pod.Status.Phase != corev1.PodRunning || len(pod.Status.ContainerStatuses) == 0 {
		return false
	}
	for _, s := range pod.Status.ContainerStatuses {
		if s.State.Running == nil {
			return false
		}
	}
	return true
}

// times are the creation-to-Running durations of each half's pods, sorted.
func (c *podClock) times() map[string][]time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string][]time.Duration{}
	for name, at := range c.running {
		out[c.half[name]] = append(out[c.half[name]], at.Sub(c.added[name]))
	}
	for _, d := range out {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	}
	return out
}

func (c *podClock) counts() (added, running int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.added), len(c.running)
}

// quantile is the nearest-rank q-quantile of sorted durations.
func quantile(d []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(d))+0.999999) - 1
	if i < 0 {
		i = 0
	}
	return d[min(i, len(d)-1)]
}

// waitPods waits until ns has want pods Running (clock) and fails naming the pods that
// are not, with their status, when timeout passes.
func waitPods(b *testing.B, ctx context.Context, ns string, clock *podClock, want int, timeout time.Duration) {
	b.Helper()
	err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(context.Context) (bool, error) {
		_, running := clock.counts()
		return running >= want, nil
	})
	if err == nil {
		return
	}
	pods, listErr := kit.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if listErr != nil {
		_, running := clock.counts()
		b.Fatalf("%d pods of %d Running after %v; listing them: %v", running, want, timeout, listErr)
	}
	var stuck []string
	for i := range pods.Items {
		p := &pods.Items[i]
		if !podRunning(p) && len(stuck) < 10 {
			stuck = append(stuck, kit.Describe(ns, p.Name, p))
		}
	}
	_, running := clock.counts()
	b.Fatalf("%d pods of %d Running after %v; the first that are not:\n%s", running, want, timeout, strings.Join(stuck, "\n"))
}

// removeImageFrom deletes every reference of the kit's image from the containerd at sock.
func removeImageFrom(b *testing.B, ctx context.Context, sock string) {
	b.Helper()
	out, err := exec.CommandContext(ctx, kit.Ctr(), "--address", sock, "-n", "k8s.io", "images", "ls", "-q").Output()
	if err != nil {
		b.Fatalf("ctr images ls at %s: %v", sock, err)
	}
	repository := "/" + strings.Split(kit.Env["REGCRED_CLUSTER_IMAGE"], ":")[0] + ":"
	var refs []string
	for _, ref := range strings.Fields(string(out)) {
		if ref == kit.Desc.Images.Hello.ID || strings.HasSuffix(ref, "@"+kit.Desc.Images.Hello.Digest) || strings.Contains(ref, repository) {
			refs = append(refs, ref)
		}
	}
	if len(refs) == 0 {
		return
	}
	args := append([]string{"--address", sock, "-n", "k8s.io", "images", "rm", "--sync"}, refs...)
	if out, err := exec.CommandContext(ctx, kit.Ctr(), args...).CombinedOutput(); err != nil {
		b.Fatalf("ctr images rm at %s: %v\n%s", sock, err, out)
	}
}

// deleteAll deletes every Deployment of ns and waits until ns has no pod left.
func deleteAll(b *testing.B, ctx context.Context, ns string, timeout time.Duration) {
	b.Helper()
	background := metav1.DeletePropagationBackground
	if err := kit.Client.AppsV1().Deployments(ns).DeleteCollection(ctx,
		metav1.DeleteOptions{PropagationPolicy: &background}, metav1.ListOptions{}); err != nil {
		b.Fatal(err)
	}
	var left int
	err := wait.PollUntilContextTimeout(ctx, 2*time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		pods, err := kit.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		left = len(pods.Items)
		return left == 0, nil
	})
	if err != nil {
		b.Fatalf("%d pods of %s still there %v after their Deployments were deleted", left, ns, timeout)
	}
}

// BenchmarkRollout: pod creation to Running at roll-out scale. On every node of the kit,
// one Deployment per half (REGCRED_BENCH_HALVES: regcredentials and dockerconfigjson by
// default) of the kit's private image, REGCRED_BENCH_PODS_PER_NODE pods a node in all
// (default 100), created together; rounds (REGCRED_BENCH_ROUNDS) cold (the image removed
// from every node first) and cached. Per round and half: p50, p99 and max of the time
// from the pod's creation to Running, as this process's pod watch saw both. Run by
// `scripts/scale-bench rollout` (BENCHMARKS.md).
func BenchmarkRollout(b *testing.B) {
	perNode := envInt(b, "REGCRED_BENCH_PODS_PER_NODE", 100)
	halves := envList("REGCRED_BENCH_HALVES", halfRegcred+","+halfDocker)
	rounds := envList("REGCRED_BENCH_ROUNDS", "cold,cached")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Hour)
	defer cancel()
	ns, err := kit.CreateNamespace(ctx, "bench-rollout")
	if err != nil {
		b.Fatal(err)
	}
	defer kit.DeleteNamespace(ns)
	scaleSecrets(b, ctx, ns, halves)
	total := perNode * len(kit.Desc.Nodes)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, round := range rounds {
			if round != "cold" && round != "cached" {
				b.Fatalf("REGCRED_BENCH_ROUNDS: %q is neither cold nor cached", round)
			}
			b.StopTimer()
			if round == "cold" {
				for _, node := range kit.Desc.Nodes {
					removeImageFrom(b, ctx, node.ContainerdSocket)
				}
			}
			clock := watchPods(b, ns)
			b.StartTimer()
			for k, node := range kit.Desc.Nodes {
				for h, half := range halves {
					// The node's pods split as evenly as the halves allow.
					replicas := int32(perNode / len(halves))
					if h < perNode%len(halves) {
						replicas++
					}
					d := scaleDeployment(fmt.Sprintf("%s-%d", half, k+1), node.Name, half, replicas, false)
					if _, err := kit.Client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
						b.Fatal(err)
					}
				}
			}
			waitPods(b, ctx, ns, clock, total, 30*time.Minute)
			b.StopTimer()
			times := clock.times()
			close(clock.stop)
			for _, half := range halves {
				d := times[half]
				if len(d) == 0 {
					b.Fatalf("no %s pod ran", half)
				}
				fmt.Printf("scale: rollout %s %s: %d pods, p50 %.2f s, p99 %.2f s, max %.2f s\n", round, half, len(d),
					quantile(d, 0.50).Seconds(), quantile(d, 0.99).Seconds(), d[len(d)-1].Seconds())
				b.ReportMetric(quantile(d, 0.99).Seconds(), round+"-"+half+"-p99-s")
			}
			if len(halves) == 2 {
				fmt.Printf("scale: rollout %s: p99 %s/%s %.3fx, p50 %.3fx\n", round, halves[0], halves[1],
					quantile(times[halves[0]], 0.99).Seconds()/quantile(times[halves[1]], 0.99).Seconds(),
					quantile(times[halves[0]], 0.50).Seconds()/quantile(times[halves[1]], 0.50).Seconds())
			}
			deleteAll(b, ctx, ns, 30*time.Minute)
			b.StartTimer()
		}
	}
}

// procSample is what /proc says of one process at one time.
type procSample struct {
	at       time.Time
	cpuTicks uint64 // utime + stime, in clock ticks
	rssKiB   uint64
}

func sampleProc(b *testing.B, pid int) procSample {
	b.Helper()
	s, err := readProc(pid)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// readProc is what /proc says of pid now.
func readProc(pid int) (procSample, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procSample{}, fmt.Errorf("process %d: %w", pid, err)
	}
	// The fields after the command's closing parenthesis; utime and stime are the
	// 14th and 15th of the line, so the 12th and 13th here.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if len(fields) < 13 {
		return procSample{}, fmt.Errorf("/proc/%d/stat: %q", pid, stat)
	}
	utime, _ := strconv.ParseUint(fields[11], 10, 64)
	stime, _ := strconv.ParseUint(fields[12], 10, 64)
	s := procSample{at: time.Now(), cpuTicks: utime + stime}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procSample{}, fmt.Errorf("process %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			s.rssKiB, _ = strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return s, nil
}

// agentPid is the node agent's process: the supervised child where `--proxy-supervise`
// runs one, otherwise the process `up` started.
func agentPid(b *testing.B, node NodeDescription) int {
	b.Helper()
	if node.PidFiles.ProxyChild != "" {
		if _, err := os.Stat(node.PidFiles.ProxyChild); err == nil {
			return pidFile(b, node.PidFiles.ProxyChild)
		}
	}
	pid := pidFile(b, node.PidFiles.Proxy)
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), "cri-proxy") {
		b.Fatalf("pid %d of %s is not the node agent (%q, %v)", pid, node.PidFiles.Proxy, cmdline, err)
	}
	return pid
}

// agentSeries are the agent's samples whose line starts with prefix, from its metrics,
// keyed by what follows the prefix up to the value.
func agentSeries(b *testing.B, node NodeDescription, prefix string) map[string]float64 {
	b.Helper()
	resp, err := http.Get("http://" + node.ProxyMetrics + "/metrics")
	if err != nil {
		b.Fatalf("the agent's metrics: %v", err)
	}
	defer resp.Body.Close()
	series := map[string]float64{}
	scanner := bufio.NewScanner(resp.Body)
	for scanner.Scan() {
		rest, ok := strings.CutPrefix(scanner.Text(), prefix)
		if !ok {
			continue
		}
		at := strings.LastIndexByte(rest, ' ')
		if at < 0 {
			continue
		}
		value, err := strconv.ParseFloat(rest[at+1:], 64)
		if err != nil {
			b.Fatalf("the agent's metric %s%s: %v", prefix, rest, err)
		}
		series[rest[:at]] = value
	}
	if err := scanner.Err(); err != nil {
		b.Fatalf("the agent's metrics: %v", err)
	}
	return series
}

// agentCalls are the agent's runtime calls so far by CRI method, from its metrics.
func agentCalls(b *testing.B, node NodeDescription) map[string]float64 {
	b.Helper()
	calls := map[string]float64{}
	for key, value := range agentSeries(b, node, `regcred_cri_proxy_runtime_call_duration_seconds_count{method="`) {
		calls[strings.TrimSuffix(key, `"}`)] = value
	}
	return calls
}

// bucket is one cumulative histogram bucket: the decisions that took at most le seconds.
type bucket struct {
	le    float64
	count float64
}

// agentDecisions are the agent's NRI decisions so far, as the cumulative buckets of its
// regcred_cri_proxy_nri_decision_duration_seconds histogram, smallest bound first (the
// last is +Inf: every decision).
func agentDecisions(b *testing.B, node NodeDescription) []bucket {
	b.Helper()
	var buckets []bucket
	for key, value := range agentSeries(b, node, `regcred_cri_proxy_nri_decision_duration_seconds_bucket{le="`) {
		le, err := strconv.ParseFloat(strings.TrimSuffix(key, `"}`), 64)
		if err != nil {
			b.Fatalf("the agent's decision bucket %q: %v", key, err)
		}
		buckets = append(buckets, bucket{le, value})
	}
	sort.Slice(buckets, func(i, j int) bool { return buckets[i].le < buckets[j].le })
	if len(buckets) == 0 || !math.IsInf(buckets[len(buckets)-1].le, 1) {
		b.Fatalf("the agent's metrics have no regcred_cri_proxy_nri_decision_duration_seconds histogram")
	}
	return buckets
}

// decisionsBetween says how the decisions made between two readings of agentDecisions
// spread over the buckets: "N decisions (≤ 1ms: n, ≤ 5ms: n, ...)", each bucket's own
// share, empty buckets left out.
func decisionsBetween(before, after []bucket) string {
	var parts []string
	below := 0.0
	for i, a := range after {
		upTo := a.count
		if i < len(before) {
			upTo -= before[i].count
		}
		if n := upTo - below; n > 0 {
			bound := "more"
			if !math.IsInf(a.le, 1) {
				bound = "≤ " + (time.Duration(a.le * float64(time.Second))).String()
			}
			parts = append(parts, fmt.Sprintf("%s: %.0f", bound, n))
		}
		below = upTo
	}
	return fmt.Sprintf("%.0f decisions (%s)", below, strings.Join(parts, ", "))
}

// agentArg is the value the agent process pid was started with for flag ("--flag VALUE"
// or "--flag=VALUE"), or "(default)".
func agentArg(b *testing.B, pid int, flag string) string {
	b.Helper()
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		b.Fatalf("the agent's command line: %v", err)
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	for i, arg := range args {
		if value, ok := strings.CutPrefix(arg, flag+"="); ok {
			return value
		}
		if arg == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	return "(default)"
}

// BenchmarkFullNode: the node agent under a full node. REGCRED_BENCH_PODS pods (default
// 110, kubelet's maxPods) on the kit's first node, half with each kind of pull Secret,
// each with exec readiness and liveness probes every 10 s; then REGCRED_BENCH_MINUTES
// (default 30) of kubelet's own relist, probe and status traffic with nothing else
// happening: the agent's CPU (utime+stime over the window), its RSS every 10 s, the
// records file's size and how often it is rewritten (its inode and modification time
// looked at every 100 ms: a write that another follows within 100 ms counts once), and
// the runtime calls kubelet sent through the agent. Then, on the still-full node, what
// regcred's NRI check adds to a container creation (nriCreateTimes). Run by
// `scripts/scale-bench node` (BENCHMARKS.md).
func BenchmarkFullNode(b *testing.B) {
	pods := envInt(b, "REGCRED_BENCH_PODS", 110)
	minutes := envInt(b, "REGCRED_BENCH_MINUTES", 30)
	if kit.Desc.Mode != "nri" {
		b.Fatalf("the kit runs in %q mode; this benchmark is of NRI mode", kit.Desc.Mode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(minutes)*time.Minute+time.Hour)
	defer cancel()
	node := kit.Desc.Nodes[0]
	ns, err := kit.CreateNamespace(ctx, "bench-full-node")
	if err != nil {
		b.Fatal(err)
	}
	defer kit.DeleteNamespace(ns)
	halves := []string{halfRegcred, halfDocker}
	scaleSecrets(b, ctx, ns, halves)
	clock := watchPods(b, ns)
	defer close(clock.stop)
	for h, half := range halves {
		replicas := int32(pods / 2)
		if h == 0 {
			replicas += int32(pods % 2)
		}
		if _, err := kit.Client.AppsV1().Deployments(ns).Create(ctx,
			scaleDeployment(half+"-1", node.Name, half, replicas, true), metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	waitPods(b, ctx, ns, clock, pods, 30*time.Minute)
	// A minute for the start's own traffic to settle before the window opens.
	time.Sleep(time.Minute)

	pid := agentPid(b, node)
	records := node.ProxyRecordsDir + "/pulled-images.json"
	type fileState struct {
		ino   uint64
		mtime int64
		size  int64
	}
	look := func() fileState {
		var st syscall.Stat_t
		if err := syscall.Stat(records, &st); err != nil {
			b.Fatalf("the records file: %v", err)
		}
		return fileState{st.Ino, st.Mtim.Nano(), st.Size}
	}
	b.ResetTimer()
	callsBefore := agentCalls(b, node)
	first := sampleProc(b, pid)
	samples := []procSample{first}
	last := look()
	writes := 0
	window := time.Duration(minutes) * time.Minute
	end := time.Now().Add(window)
	poll, sample := time.NewTicker(100*time.Millisecond), time.NewTicker(10*time.Second)
	defer poll.Stop()
	defer sample.Stop()
	for time.Now().Before(end) {
		select {
		case <-poll.C:
			if now := look(); now != last {
				writes++
				last = now
			}
		case <-sample.C:
			samples = append(samples, sampleProc(b, pid))
		}
	}
	final := sampleProc(b, pid)
	samples = append(samples, final)
	callsAfter := agentCalls(b, node)
	b.StopTimer()

	ticks := float64(clockTicks(b))
	cpu := float64(final.cpuTicks-first.cpuTicks) / ticks / final.at.Sub(first.at).Seconds()
	var peak uint64
	for _, s := range samples {
		peak = max(peak, s.rssKiB)
	}
	// RSS at the start of the last 20 minutes (or of the window, when it is shorter).
	from := samples[0]
	for _, s := range samples {
		if final.at.Sub(s.at) >= 20*time.Minute {
			from = s
		}
	}
	fmt.Printf("scale: full node: %d pods on %s, %d min of kubelet's own traffic\n", pods, node.Name, minutes)
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		b.Fatalf("the agent's binary: %v", err)
	}
	fmt.Printf("scale: full node: the agent: %s\n", exe)
	fmt.Printf("scale: full node: agent CPU %.3f%% of a core on average (%.2f s in %.0f s)\n",
		100*cpu, float64(final.cpuTicks-first.cpuTicks)/ticks, final.at.Sub(first.at).Seconds())
	fmt.Printf("scale: full node: agent RSS %.1f MiB at the start, %.1f MiB %.0f min before the end, %.1f MiB at the end, peak %.1f MiB\n",
		float64(first.rssKiB)/1024, float64(from.rssKiB)/1024, final.at.Sub(from.at).Minutes(), float64(final.rssKiB)/1024, float64(peak)/1024)
	fmt.Printf("scale: full node: records file %d B, %d rewrites seen (%.2f a minute)\n", last.size, writes, float64(writes)/window.Minutes())
	var methods []string
	for m := range callsAfter {
		methods = append(methods, m)
	}
	sort.Strings(methods)
	for _, m := range methods {
		fmt.Printf("scale: full node: runtime calls through the agent: %s %.0f (%.1f a minute)\n",
			m, callsAfter[m]-callsBefore[m], (callsAfter[m]-callsBefore[m])/window.Minutes())
	}
	b.ReportMetric(100*cpu, "agent-cpu-%")
	b.ReportMetric(float64(final.rssKiB)/1024, "agent-rss-MiB")

	// Still all there, none restarted (a probe that failed would have restarted one).
	list, err := kit.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for i := range list.Items {
		p := &list.Items[i]
		if !podRunning(p) || p.Status.ContainerStatuses[0].RestartCount != 0 {
			b.Fatalf("after the window: %s", kit.Describe(ns, p.Name, p))
		}
	}

	// What the NRI check adds to a container creation on the full node, in a sandbox of
	// one of its regcredentials pods (allowed the image when it started).
	var onRecord *corev1.Pod
	for i := range list.Items {
		if strings.HasPrefix(list.Items[i].Name, halfRegcred+"-") {
			onRecord = &list.Items[i]
			break
		}
	}
	if onRecord == nil {
		b.Fatal("no regcredentials pod on the node")
	}
	decisionsBefore := agentDecisions(b, node)
	times := nriCreateTimes(b, ctx, node, onRecord, kit.Image("BASIC"), false)
	// The agent's own view of the same creations: its decision times, to tell the
	// decision (its cache, the API on a miss) from NRI's hop.
	fmt.Printf("scale: full node: the agent's NRI decisions during the creations, --kube-cache-ttl %s: %s\n",
		agentArg(b, pid, "--kube-cache-ttl"), decisionsBetween(decisionsBefore, agentDecisions(b, node)))
	for _, arm := range []string{"with-regcred", "noop-plugin", "without"} {
		d := times[arm]
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		fmt.Printf("scale: full node: CreateContainer %s: p50 %d µs, p99 %d µs (%d)\n", arm, quantile(d, 0.5).Microseconds(), quantile(d, 0.99).Microseconds(), len(d))
	}
	fmt.Printf("scale: full node: added by regcred-nri: p50 %d µs, p99 %d µs\n",
		quantile(times["with-regcred"], 0.5).Microseconds()-quantile(times["without"], 0.5).Microseconds(),
		quantile(times["with-regcred"], 0.99).Microseconds()-quantile(times["without"], 0.99).Microseconds())
}

// clockTicks is the kernel's USER_HZ, the unit of /proc's CPU times (getconf CLK_TCK).
func clockTicks(b *testing.B) int {
	b.Helper()
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		b.Fatalf("getconf CLK_TCK: %v", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || n <= 0 {
		b.Fatalf("getconf CLK_TCK said %q", out)
	}
	return n
}

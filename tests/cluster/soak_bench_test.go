package kit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// soakClass is one kind of pod the soak keeps creating: its image's registry, its pull
// Secret (none when empty), and whether its credentials let it run.
type soakClass struct {
	name, registry, secret string
	runs                   bool
}

// soakTally counts the outcomes, by class, and keeps the first details of what went wrong.
type soakTally struct {
	mu                                         sync.Mutex
	created, ran, refused, stuck, wrong        map[string]int
	undecided                                  map[string]int
	details                                    []string
	createRetries, registryRestarts, rotations int
}

func (t *soakTally) add(what map[string]int, class, detail string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	what[class]++
	if detail != "" && len(t.details) < 20 {
		t.details = append(t.details, detail)
	}
}

// refusalReasons are the waiting reasons of a container whose pull or creation was
// refused: the pull by the registry (through the agent), the creation by regcred-nri.
var refusalReasons = map[string]bool{"ErrImagePull": true, "ImagePullBackOff": true, "CreateContainerError": true}

// BenchmarkSoak: a bounded soak (REGCRED_BENCH_MINUTES, default 60) on a kit with regcred
// installed through its chart (the webhook answering every Secret write). Every 15 s, on
// every node, one pod of each class: a regcredentials and a dockerconfigjson Secret that
// let it run, a regcredentials Secret rotated every minute between its two valid forms
// (password, identity token) on the token registry, a wrong password and no Secret (both
// must never run), pulled Always and IfNotPresent by turns. Every 5 minutes the three
// registries are killed and started again (SIGHUP to the kit's registries); at a third and
// two thirds of the run the API server is stopped and `up` starts it again. Each pod's
// outcome is checked against what its credentials allow: a pod that should run must be
// Running within 5 minutes (else stuck); one that should not must show a refusal within
// 3 minutes (else undecided) and never run in at least 45 s of watching (else a wrong
// decision). The node agents' and the webhook's RSS every 30 s.
// Run by `scripts/scale-bench soak` (BENCHMARKS.md).
func BenchmarkSoak(b *testing.B) {
	minutes := envInt(b, "REGCRED_BENCH_MINUTES", 60)
	window := time.Duration(minutes) * time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), window+30*time.Minute)
	defer cancel()
	ns, err := kit.CreateNamespace(ctx, "bench-soak")
	if err != nil {
		b.Fatal(err)
	}
	defer kit.DeleteNamespace(ns)
	basic, token := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"], kit.Env["REGCRED_CLUSTER_TOKEN_REGISTRY"]
	scaleSecrets(b, ctx, ns, []string{halfRegcred, halfDocker})
	rotations := []map[string][]byte{
		{"serverAddress": []byte(token), "username": []byte(user()), "password": []byte(password())},
		{"serverAddress": []byte(token), "identityToken": []byte(kit.Env["REGCRED_CLUSTER_REFRESH_TOKEN"])},
	}
	if _, err := kit.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "rotating"}, Type: RegcredSecretType, Data: rotations[0],
	}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := kit.CreateRegcredSecret(ctx, ns, "wrong", map[string]string{
		"serverAddress": basic, "username": user(), "password": wrongPassword(),
	}); err != nil {
		b.Fatal(err)
	}
	classes := []soakClass{
		{halfRegcred, "BASIC", halfRegcred, true},
		{halfDocker, "BASIC", halfDocker, true},
		{"rotating", "TOKEN", "rotating", true},
		{"wrong", "BASIC", "wrong", false},
		{"none", "BASIC", "", false},
	}

	factory := informers.NewSharedInformerFactoryWithOptions(kit.Client, 0, informers.WithNamespace(ns))
	pods := factory.Core().V1().Pods().Informer()
	stop := make(chan struct{})
	defer close(stop)
	factory.Start(stop)
	if !cache.WaitForCacheSync(stop, pods.HasSynced) {
		b.Fatal("the pod informer did not sync")
	}
	current := func(name string) *corev1.Pod {
		obj, ok, _ := pods.GetStore().GetByKey(ns + "/" + name)
		if !ok {
			return nil
		}
		pod, _ := obj.(*corev1.Pod)
		return pod
	}
	tally := &soakTally{created: map[string]int{}, ran: map[string]int{}, refused: map[string]int{},
		stuck: map[string]int{}, wrong: map[string]int{}, undecided: map[string]int{}}
	zero := int64(0)
	remove := func(name string) {
		// Retried through an API server restart; the namespace's deletion takes what is left.
		for i := 0; i < 60; i++ {
			err := kit.Client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
			if err == nil || ctx.Err() != nil || strings.Contains(err.Error(), "not found") {
				return
			}
			time.Sleep(2 * time.Second)
		}
	}
	check := func(name string, class soakClass) {
		defer remove(name)
		if class.runs {
			for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
				if pod := current(name); pod != nil && podRunning(pod) {
					tally.add(tally.ran, class.name, "")
					return
				}
			}
			tally.add(tally.stuck, class.name, "stuck: "+name+": "+kit.Describe(ns, name, current(name)))
			return
		}
		// Watched for 45 s, longer (up to 3 minutes) until a refusal shows: a pod created
		// just before the API server stops cannot report one until it is back.
		refused := false
		started := time.Now()
		for deadline := started.Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
			if refused && time.Since(started) >= 45*time.Second {
				break
			}
			pod := current(name)
			if pod == nil {
				continue
			}
			if podRunning(pod) {
				tally.add(tally.wrong, class.name, "ran: "+name+": "+kit.Describe(ns, name, pod))
				return
			}
			for _, s := range pod.Status.ContainerStatuses {
				refused = refused || (s.State.Waiting != nil && refusalReasons[s.State.Waiting.Reason])
			}
		}
		if refused {
			tally.add(tally.refused, class.name, "")
		} else {
			tally.add(tally.undecided, class.name, "undecided: "+name+": "+kit.Describe(ns, name, current(name)))
		}
	}
	create := func(pod *corev1.Pod) bool {
		for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(2 * time.Second) {
			if _, err := kit.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err == nil {
				return true
			}
			tally.mu.Lock()
			tally.createRetries++
			tally.mu.Unlock()
		}
		return false
	}

	samples := map[string][]procSample{}
	sample := func() {
		for _, node := range kit.Desc.Nodes {
			key := "agent " + node.Name
			samples[key] = append(samples[key], sampleProc(b, agentPid(b, node)))
		}
		// A webhook pod may be replaced between the look at /proc and the read.
		for _, pid := range webhookPids() {
			if s, err := readProc(pid); err == nil {
				key := fmt.Sprintf("webhook pid %d", pid)
				samples[key] = append(samples[key], s)
			}
		}
	}

	var wg sync.WaitGroup
	var restarts sync.WaitGroup
	apiRestarts := 0
	// On its own goroutine: errors are reported, never fatal there.
	restartAPIServer := func() {
		defer restarts.Done()
		data, err := os.ReadFile(kit.Desc.PidFiles["kube-apiserver"])
		pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || pid <= 0 {
			b.Errorf("the API server's pid file: %v", err)
			return
		}
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
			b.Errorf("stopping the API server: %v", err)
			return
		}
		// As the kit's own stop: SIGTERM, then SIGKILL after 10 s (the API server's graceful
		// shutdown took over a minute once, and `up` then took it for running).
		gone := func(within time.Duration) bool {
			for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				if syscall.Kill(pid, 0) != nil {
					return true
				}
			}
			return false
		}
		if !gone(10 * time.Second) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			if !gone(30 * time.Second) {
				b.Errorf("the API server (pid %d) is still there 30 s after SIGKILL", pid)
				return
			}
		}
		// With the binaries as they are: a rebuild would stretch the outage to minutes.
		if out, err := kit.ClusterEnv(ctx, []string{"REGCRED_KIT_NO_BUILD=1"}, "up"); err != nil {
			b.Errorf("starting the API server again: %v\n%s", err, out)
		}
	}
	b.ResetTimer()
	start := time.Now()
	end := start.Add(window)
	batch, rotate, registries, rss := time.NewTicker(15*time.Second), time.NewTicker(time.Minute), time.NewTicker(5*time.Minute), time.NewTicker(30*time.Second)
	defer batch.Stop()
	defer rotate.Stop()
	defer registries.Stop()
	defer rss.Stop()
	sample()
	for seq := 0; time.Now().Before(end); {
		select {
		case <-batch.C:
			if apiRestarts < 2 && time.Since(start) >= time.Duration(apiRestarts+1)*window/3 {
				apiRestarts++
				restarts.Add(1)
				go restartAPIServer()
			}
			policy := corev1.PullAlways
			if seq%2 == 1 {
				policy = corev1.PullIfNotPresent
			}
			for k, node := range kit.Desc.Nodes {
				for _, class := range classes {
					name := fmt.Sprintf("%s-%d-%d", class.name, k+1, seq)
					var secrets []string
					if class.secret != "" {
						secrets = append(secrets, class.secret)
					}
					pod := kit.PodSpec(name, kit.Image(class.registry), secrets...)
					pod.Spec.NodeName = node.Name
					pod.Spec.Containers[0].ImagePullPolicy = policy
					tally.add(tally.created, class.name, "")
					wg.Add(1)
					go func() {
						defer wg.Done()
						if create(pod) {
							check(name, class)
						} else {
							tally.add(tally.stuck, class.name, "not created in 3 minutes: "+name)
						}
					}()
				}
			}
			seq++
		case <-rotate.C:
			tally.mu.Lock()
			tally.rotations++
			next := rotations[tally.rotations%2]
			tally.mu.Unlock()
			secret, err := kit.Client.CoreV1().Secrets(ns).Get(ctx, "rotating", metav1.GetOptions{})
			if err == nil {
				secret.Data = next
				_, err = kit.Client.CoreV1().Secrets(ns).Update(ctx, secret, metav1.UpdateOptions{})
			}
			if err != nil {
				// The API server may be restarting: the next minute rotates again.
				b.Logf("rotating the Secret: %v", err)
			}
		case <-registries.C:
			if err := syscall.Kill(pidFile(b, kit.Desc.PidFiles["registries"]), syscall.SIGHUP); err != nil {
				b.Fatalf("restarting the registries: %v", err)
			}
			tally.mu.Lock()
			tally.registryRestarts++
			tally.mu.Unlock()
		case <-rss.C:
			sample()
		}
	}
	wg.Wait()
	restarts.Wait()
	sample()
	b.StopTimer()

	var created, ran, refused, stuck, wrong, undecided, shouldRun, shouldNot int
	for _, class := range classes {
		c := class.name
		created += tally.created[c]
		ran, refused, stuck, wrong, undecided = ran+tally.ran[c], refused+tally.refused[c], stuck+tally.stuck[c], wrong+tally.wrong[c], undecided+tally.undecided[c]
		if class.runs {
			shouldRun += tally.created[c]
		} else {
			shouldNot += tally.created[c]
		}
		fmt.Printf("scale: soak: %s: %d created, %d ran, %d refused, %d stuck, %d wrong, %d undecided\n",
			c, tally.created[c], tally.ran[c], tally.refused[c], tally.stuck[c], tally.wrong[c], tally.undecided[c])
	}
	fmt.Printf("scale: soak: %d min on %d nodes: %d pods, %d of %d that should run ran, %d of %d that should not were refused; %d stuck, %d wrong decisions, %d undecided\n",
		minutes, len(kit.Desc.Nodes), created, ran, shouldRun, refused, shouldNot, stuck, wrong, undecided)
	fmt.Printf("scale: soak: %d Secret rotations, %d registry restarts, %d API server restarts, %d pod creations retried\n",
		tally.rotations, tally.registryRestarts, apiRestarts, tally.createRetries)
	keys := make([]string, 0, len(samples))
	for key := range samples {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		s := samples[key]
		var peak uint64
		for _, x := range s {
			peak = max(peak, x.rssKiB)
		}
		// The RSS once warm (5 minutes in, or the first sample) and at the end.
		warm := s[0]
		for _, x := range s {
			if x.at.Sub(start) <= 5*time.Minute {
				warm = x
			}
		}
		fmt.Printf("scale: soak: %s RSS %.1f MiB at %.0f min, %.1f MiB at the end (%.0f min), peak %.1f MiB\n", key,
			float64(warm.rssKiB)/1024, warm.at.Sub(start).Minutes(), float64(s[len(s)-1].rssKiB)/1024,
			s[len(s)-1].at.Sub(start).Minutes(), float64(peak)/1024)
	}
	for _, d := range tally.details {
		fmt.Println("scale: soak: " + d)
	}
	if stuck > 0 || wrong > 0 || undecided > 0 {
		b.Fatalf("%d stuck, %d wrong decisions, %d undecided (above)", stuck, wrong, undecided)
	}
}

// webhookPids are the processes of `regcred webhook` on this machine (the chart's webhook
// pods, which run on the kit's nodes).
func webhookPids() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if len(args) > 1 && filepath.Base(args[0]) == "regcred" && args[1] == "webhook" {
			pids = append(pids, pid)
		}
	}
	return pids
}

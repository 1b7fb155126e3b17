package kit

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BenchmarkPodStartup: pod creation to Running for the same private image, with a
// regcredentials Secret through the proxy vs a dockerconfigjson Secret on kubelet's own
// path, the image removed from containerd before each run, 10 runs each, interleaved.
// Run with: go test -run '^$' -bench PodStartup -benchtime 1x (see BENCHMARKS.md).
func BenchmarkPodStartup(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	ns, err := kit.CreateNamespace(ctx, "bench-startup")
	if err != nil {
		b.Fatal(err)
	}
	defer kit.DeleteNamespace(ns)
	basic := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"]
	if _, err := kit.CreateRegcredSecret(ctx, ns, "regcred", map[string]string{
		"serverAddress": basic, "username": user(), "password": password(),
	}); err != nil {
		b.Fatal(err)
	}
	if _, err := kit.CreateDockerConfigSecret(ctx, ns, "docker", basic, user(), password()); err != nil {
		b.Fatal(err)
	}
	const runs = 10
	times := map[string][]time.Duration{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for run := 0; run < runs; run++ {
			for _, secret := range []string{"regcred", "docker"} {
				b.StopTimer()
				removeImage(b, ctx)
				b.StartTimer()
				name := fmt.Sprintf("%s-%d-%d", secret, i, run)
				started := time.Now()
				if _, err := kit.CreatePod(ctx, ns, kit.PodSpec(name, kit.Image("BASIC"), secret)); err != nil {
					b.Fatal(err)
				}
				if _, err := kit.WaitRunning(ctx, ns, name, runTimeout); err != nil {
					b.Fatal(err)
				}
				times[secret] = append(times[secret], time.Since(started))
				b.StopTimer()
				zero := int64(0)
				if err := kit.Client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		}
	}
	b.StopTimer()
	for _, secret := range []string{"regcred", "docker"} {
		d := times[secret]
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		b.ReportMetric(float64(d[len(d)/2].Milliseconds()), secret+"-median-ms")
		b.ReportMetric(float64(d[len(d)-1].Milliseconds()), secret+"-max-ms")
		b.ReportMetric(float64(d[0].Milliseconds()), secret+"-min-ms")
		b.Logf("%s: %v", secret, d)
	}
	b.ReportMetric(float64(median(times["regcred"]))/float64(median(times["docker"])), "regcred/docker")
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// removeImage deletes every reference of the kit's image from the first node's
// containerd (tag, digest and ID references), so the next pod pulls it again.
func removeImage(b *testing.B, ctx context.Context) {
	b.Helper()
	removeImageFrom(b, ctx, kit.FirstNode().ContainerdSocket)
}

package kit

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"
)

// BenchmarkCRIPassThrough: what the proxy adds to the ImageService calls kubelet makes
// most (ImageStatus, ListImages), measured with kubelet's own CRI client (k8s.io/cri-client
// on grpc-go) against the kit's containerd three ways, one call each per round, in turn:
// directly, through a byte relay started here (io.Copy both ways: the least any extra
// process hop can cost on this machine), and through regcred's proxy. 3000 rounds after
// 200 of warm-up on warm connections. Run with:
//
//	go test -run '^$' -bench CRIPassThrough -benchtime 1x (see BENCHMARKS.md)
func BenchmarkCRIPassThrough(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	containerd := kit.Env["REGCRED_CLUSTER_CONTAINERD_SOCKET"]
	proxy := kit.Env["REGCRED_CLUSTER_PROXY_SOCKET"]
	if containerd == "" || proxy == "" {
		b.Fatal("cluster.env names no containerd or proxy socket (REGCRED_CLUSTER_CONTAINERD_SOCKET, REGCRED_CLUSTER_PROXY_SOCKET)")
	}
	relay, stop := startRelay(b, containerd)
	defer stop()
	names := []string{"direct", "relay", "proxy"}
	clients := map[string]imageService{}
	for name, socket := range map[string]string{"direct": containerd, "relay": relay, "proxy": proxy} {
		client, err := remote.NewRemoteImageService(ctx, "unix://"+socket, 10*time.Second, nil, false)
		if err != nil {
			b.Fatalf("%s: %v", name, err)
		}
		clients[name] = client
	}
	images, err := clients["direct"].ListImages(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	if len(images) == 0 {
		b.Fatal("containerd has no image to ask about")
	}
	spec := &runtimeapi.ImageSpec{Image: images[0].Id}
	calls := map[string]func(imageService) error{
		"ImageStatus": func(c imageService) error {
			status, err := c.ImageStatus(ctx, spec, false)
			if err == nil && status.GetImage() == nil {
				err = errors.New("ImageStatus found no image")
			}
			return err
		},
		"ListImages": func(c imageService) error {
			list, err := c.ListImages(ctx, nil)
			if err == nil && len(list) != len(images) {
				err = errors.New("ListImages returned another number of images")
			}
			return err
		},
	}
	const warmup, rounds = 200, 3000
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, call := range []string{"ImageStatus", "ListImages"} {
			times := map[string][]time.Duration{}
			for round := 0; round < warmup+rounds; round++ {
				for _, name := range names {
					started := time.Now()
					if err := calls[call](clients[name]); err != nil {
						b.Fatalf("%s %s: %v", call, name, err)
					}
					if round >= warmup {
						times[name] = append(times[name], time.Since(started))
					}
				}
			}
			direct := micros(median(times["direct"]))
			for _, name := range names {
				m := micros(median(times[name]))
				b.ReportMetric(m, call+"-"+name+"-median-µs")
				b.ReportMetric(micros(percentile(times[name], 0.9)), call+"-"+name+"-p90-µs")
				if name != "direct" {
					b.ReportMetric(m/direct, call+"-"+name+"/direct")
				}
			}
		}
	}
}

// imageService is the part of cri-client's image service the benchmark calls.
type imageService interface {
	ImageStatus(context.Context, *runtimeapi.ImageSpec, bool) (*runtimeapi.ImageStatusResponse, error)
	ListImages(context.Context, *runtimeapi.ImageFilter) ([]*runtimeapi.Image, error)
}

func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

func percentile(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(float64(len(s)-1)*p+0.5)]
}

// startRelay listens on a socket in a temporary directory and copies every connection's
// bytes to and from target, unread. It returns the socket and a function that closes the
// listener and every connection and waits for the copies to end.
func startRelay(b *testing.B, target string) (string, func()) {
	socket := filepath.Join(b.TempDir(), "relay.sock")
	listener, err := net.Listen("unix", socket)
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			client, err := listener.Accept()
			if err != nil {
				return
			}
			upstream, err := net.Dial("unix", target)
			if err != nil {
				client.Close()
				continue
			}
			mu.Lock()
			open = append(open, client, upstream)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(upstream, client); upstream.Close() }()
			go func() { defer wg.Done(); io.Copy(client, upstream); client.Close() }()
		}
	}()
	return socket, func() {
		listener.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}
}

package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"
)

func TestQuestionOnContainerd23NamesTheImageByAnnotationOnly(t *testing.T) {
	pod := &api.PodSandbox{Namespace: "team", Name: "web", Uid: "u-1"}
	ctr := &api.Container{Name: "app", Annotations: map[string]string{ImageNameAnnotation: "r.io/app:v1"}}
	q := Question(pod, ctr)
	want := DecisionRequest{Namespace: "team", Pod: "web", UID: "u-1", Container: "app", Image: "r.io/app:v1"}
	if !reflect.DeepEqual(q, want) {
		t.Fatalf("got %+v, want %+v", q, want)
	}
}

func TestQuestionNamesTheImageVolumesOfTheSandbox(t *testing.T) {
	hex := strings.Repeat("ab", 32)
	other := strings.Repeat("cd", 32)
	pod := &api.PodSandbox{Id: "sb1", Namespace: "team", Name: "web", Uid: "u-1"}
	ctr := &api.Container{Name: "app", Mounts: []*api.Mount{
		{Destination: "/data", Source: "/run/containerd/io.containerd.grpc.v1.cri/image-volumes/sb1/" + hex},
		{Destination: "/sub", Source: "/run/containerd/io.containerd.grpc.v1.cri/image-volumes/sb1/" + hex + "/etc"},
		{Destination: "/other", Source: "/run/containerd/io.containerd.grpc.v1.cri/image-volumes/sb2/" + other},
		{Destination: "/etc/hosts", Source: "/var/lib/kubelet/pods/u-1/etc-hosts"},
		{Destination: "/short", Source: "/x/image-volumes/sb1/abc"},
	}}
	q := Question(pod, ctr)
	if len(q.ImageVolumes) != 1 || q.ImageVolumes[0] != "sha256:"+hex {
		t.Fatalf("want the one image volume of sandbox sb1 once, got %v", q.ImageVolumes)
	}
}

func TestQuestionOnContainerd24CarriesTheImageID(t *testing.T) {
	pod := &api.PodSandbox{Namespace: "team", Name: "web", Uid: "u-1"}
	ctr := &api.Container{Name: "app", Image: &api.Image{Name: "r.io/app:v1", Digest: "sha256:index", ConfigDigest: "sha256:config"}}
	q := Question(pod, ctr)
	if q.Image != "r.io/app:v1" || q.ImageID != "sha256:config" {
		t.Fatalf("got %+v: want the name and the config digest (the CRI image ID)", q)
	}
}

// agent serves handler on a unix socket in a temporary directory.
func agent(t *testing.T, handler http.HandlerFunc) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "decisions.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "unix://" + path
}

func validate(t *testing.T, endpoint string, timeout time.Duration) error {
	t.Helper()
	client, err := NewAgentClient(endpoint, timeout)
	if err != nil {
		t.Fatal(err)
	}
	p := &Plugin{agent: client, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	return p.ValidateContainerAdjustment(context.Background(), &api.ValidateContainerAdjustmentRequest{
		Pod:       &api.PodSandbox{Namespace: "team", Name: "web", Uid: "u-1"},
		Container: &api.Container{Name: "app", Annotations: map[string]string{ImageNameAnnotation: "r.io/app:v1"}},
	})
}

func TestAnAllowedContainerIsCreatedAndARefusalCarriesTheAgentsMessage(t *testing.T) {
	var asked DecisionRequest
	allow := true
	endpoint := agent(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != DecidePath {
			http.Error(w, "wrong call", http.StatusNotFound)
			return
		}
		_ = json.NewDecoder(r.Body).Decode(&asked)
		_ = json.NewEncoder(w).Encode(Decision{Allowed: allow, Decision: "refused", Message: "regcred: pod team/web may not use image r.io/app:v1: no"})
	})
	if err := validate(t, endpoint, time.Second); err != nil {
		t.Fatalf("allowed, but: %v", err)
	}
	if asked.Pod != "web" || asked.UID != "u-1" || asked.Image != "r.io/app:v1" {
		t.Fatalf("the agent was asked %+v", asked)
	}
	allow = false
	err := validate(t, endpoint, time.Second)
	if err == nil || err.Error() != "regcred: pod team/web may not use image r.io/app:v1: no" {
		t.Fatalf("want the agent's message, got %v", err)
	}
}

func TestNoAnswerRefusesTheContainer(t *testing.T) {
	slow := agent(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	broken := agent(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	})
	garbled := agent(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("{")) })
	gone := "unix://" + filepath.Join(t.TempDir(), "nobody.sock")
	for name, endpoint := range map[string]string{"slow": slow, "broken": broken, "garbled": garbled, "gone": gone} {
		err := validate(t, endpoint, 200*time.Millisecond)
		if err == nil || !strings.Contains(err.Error(), "the regcred node agent did not answer") || !strings.Contains(err.Error(), "team/web") {
			t.Errorf("%s agent: want a refusal naming regcred and the pod, got %v", name, err)
		}
	}
}

func TestTheAgentEndpointMustBeAnAbsoluteUnixSocket(t *testing.T) {
	for _, bad := range []string{"tcp://127.0.0.1:1", "unix://relative.sock", "x.sock"} {
		if _, err := NewAgentClient(bad, time.Second); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// serveAgentAt serves an agent that allows everything on a unix socket at path, and
// counts its questions; stop closes the listener and every connection, as an exiting
// agent does.
func serveAgentAt(t *testing.T, path string, asked *atomic.Int32) (stop func()) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		// (t.Error: this may run on another goroutine than the test's)
		t.Error(err)
		return func() {}
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		_ = json.NewEncoder(w).Encode(Decision{Allowed: true, Decision: "allowed"})
	})}
	go func() { _ = srv.Serve(l) }()
	stop = func() { _ = srv.Close() }
	t.Cleanup(stop)
	return stop
}

// An agent restarting (its socket gone, or left behind with nobody listening) delays the
// question; the container is created once the new agent answers within the deadline.
func TestARestartingAgentDelaysTheQuestionInsteadOfRefusingIt(t *testing.T) {
	for _, stale := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "decisions.sock")
		if stale {
			// A socket file whose listener is gone: ECONNREFUSED.
			l, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			l.(*net.UnixListener).SetUnlinkOnClose(false)
			_ = l.Close()
		}
		var asked atomic.Int32
		go func() {
			time.Sleep(300 * time.Millisecond)
			_ = os.Remove(path)
			serveAgentAt(t, path, &asked)
		}()
		started := time.Now()
		if err := validate(t, "unix://"+path, 2*time.Second); err != nil {
			t.Fatalf("stale socket file %v: refused while the agent was coming back: %v", stale, err)
		}
		if waited := time.Since(started); waited < 300*time.Millisecond || asked.Load() != 1 {
			t.Fatalf("stale socket file %v: answered after %s by %d questions to the new agent", stale, waited, asked.Load())
		}
	}
}

// The agent stops and another starts between two questions: the kept-alive connection the
// first one closed is not the question's failure, and the question goes to the new one.
// (The transport mostly sees such a connection closed before it reuses it; the question's
// Idempotency-Key covers the race where the agent closes it as the question is written.)
func TestAQuestionAfterTheAgentWasReplacedGoesToTheNewOne(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.sock")
	client, err := NewAgentClient("unix://"+path, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	p := &Plugin{agent: client, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ask := func() error {
		return p.ValidateContainerAdjustment(context.Background(), &api.ValidateContainerAdjustmentRequest{
			Pod:       &api.PodSandbox{Namespace: "team", Name: "web", Uid: "u-1"},
			Container: &api.Container{Name: "app", Annotations: map[string]string{ImageNameAnnotation: "r.io/app:v1"}},
		})
	}
	var first, second atomic.Int32
	stop := serveAgentAt(t, path, &first)
	if err := ask(); err != nil {
		t.Fatal(err)
	}
	stop()
	serveAgentAt(t, path, &second)
	if err := ask(); err != nil {
		t.Fatalf("the question after the agent's replacement was refused: %v", err)
	}
	if first.Load() != 1 || second.Load() != 1 {
		t.Fatalf("questions: %d to the first agent, %d to the second; want 1 and 1", first.Load(), second.Load())
	}
}

// An agent that stays away: the dial gives up at its deadline, saying how often it tried.
func TestDialingAGoneAgentEndsAtTheDeadline(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nobody.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	started := time.Now()
	conn, err := dialAgent(ctx, path)
	if err == nil {
		conn.Close()
		t.Fatal("a dial to no agent succeeded")
	}
	if waited := time.Since(started); waited < 200*time.Millisecond || waited > 2*time.Second {
		t.Fatalf("the dial gave up after %s, want at its 200 ms deadline", waited)
	}
	if !strings.Contains(err.Error(), "no such file or directory") || !strings.Contains(err.Error(), "times until the deadline") {
		t.Fatalf("the error does not say what the dial met and how often it tried: %v", err)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"
)

// DecidePath is the agent's one call.
const DecidePath = "/v1/decide"

// DecisionRequest is the question (the agent's DecisionRequest, agent/src/decide.rs).
type DecisionRequest struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	UID       string `json:"uid"`
	Container string `json:"container,omitempty"`
	Image     string `json:"image"`
	ImageID   string `json:"imageId,omitempty"`
	// ImageVolumes are the manifest digests (sha256:HEX) of the image volumes the
	// container mounts.
	ImageVolumes []string `json:"imageVolumes,omitempty"`
}

// Decision is the agent's answer.
type Decision struct {
	Allowed  bool   `json:"allowed"`
	Decision string `json:"decision"`
	Message  string `json:"message,omitempty"`
}

// AgentClient asks the node agent over its unix socket.
type AgentClient struct {
	http    *http.Client
	timeout time.Duration
}

// NewAgentClient is a client for the agent at endpoint (unix:///ABSOLUTE/PATH).
func NewAgentClient(endpoint string, timeout time.Duration) (*AgentClient, error) {
	path := strings.TrimPrefix(endpoint, "unix://")
	if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("%q is not a unix socket endpoint: write unix:///ABSOLUTE/PATH", endpoint)
	}
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			// The transport dials under a context the question's deadline does not end
			// (net/http keeps a dial going for later requests), so the dial has its own.
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			return dialAgent(ctx, path)
		},
		MaxIdleConns:    4,
		IdleConnTimeout: 30 * time.Second,
	}
	return &AgentClient{http: &http.Client{Transport: transport}, timeout: timeout}, nil
}

// redialPause is how long dialAgent waits between two tries.
const redialPause = 25 * time.Millisecond

// dialAgent connects to the agent's socket. A socket that is not there (ENOENT) or that
// nobody listens on (ECONNREFUSED) is what a restarting agent looks like: the old one
// removed its socket at exit and the new one has not bound it yet (a second or less
// under systemd's Restart=). It is tried again every redialPause until ctx ends (the
// client's timeout from the dial's start); any other error is returned at once. So an agent's
// restart (an upgrade rolling over the node, a crash) delays a container's creation
// instead of refusing it, and an agent that stays down still refuses it at the deadline.
func dialAgent(ctx context.Context, path string) (net.Conn, error) {
	var dialer net.Dialer
	tries := 0
	for {
		conn, err := dialer.DialContext(ctx, "unix", path)
		tries++
		if err == nil || !(errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)) {
			return conn, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (tried %d times until the deadline)", err, tries)
		case <-time.After(redialPause):
		}
	}
}

// Decide asks; an error means no answer (the agent is down, slow, or answered nonsense).
func (c *AgentClient) Decide(ctx context.Context, q DecisionRequest) (Decision, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	body, err := json.Marshal(q)
	if err != nil {
		return Decision{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://regcred-agent"+DecidePath, bytes.NewReader(body))
	if err != nil {
		return Decision{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	// The question changes nothing on the agent, so it may be sent again. This key (with
	// no value, so it is not sent) tells the transport so: a POST that meets a kept-alive
	// connection the agent closed as it stopped is then retried on a new connection
	// (dialAgent) rather than failed (net/http, Transport: "isReplayable").
	req.Header["Idempotency-Key"] = nil
	resp, err := c.http.Do(req)
	if err != nil {
		return Decision{}, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Decision{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return Decision{}, fmt.Errorf("the agent answered %s: %s", resp.Status, strings.TrimSpace(string(answer)))
	}
	var d Decision
	if err := json.Unmarshal(answer, &d); err != nil {
		return Decision{}, fmt.Errorf("the agent's answer does not parse: %w", err)
	}
	if !d.Allowed && d.Message == "" {
		d.Message = fmt.Sprintf("regcred: pod %s/%s may not use image %s (%s)", q.Namespace, q.Pod, q.Image, d.Decision)
	}
	return d, nil
}

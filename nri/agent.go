package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
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
	dialer := net.Dialer{}
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", path)
		},
		MaxIdleConns:    4,
		IdleConnTimeout: 30 * time.Second,
	}
	return &AgentClient{http: &http.Client{Transport: transport}, timeout: timeout}, nil
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

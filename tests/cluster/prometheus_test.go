package kit

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// promResult is the part of a Prometheus API answer the test reads.
type promResult struct {
	Status string `json:"status"`
	Data   struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Value  []any             `json:"value"`
		} `json:"result"`
		Groups []struct {
			Rules []struct {
				Name   string `json:"name"`
				Health string `json:"health"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"data"`
	Error string `json:"error"`
}

func promGet(ctx context.Context, base, path string) (*promResult, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r promResult
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%s: %v: %s", path, err, body)
	}
	if r.Status != "success" {
		return &r, fmt.Errorf("%s: %s", path, r.Error)
	}
	return &r, nil
}

// Debian's Prometheus, started here on loopback, scrapes the kit's node agents (job
// regcred-node-agent: each node's --metrics-addr) and a `regcred webhook` process (job
// regcred-webhook), with the chart's rule file loaded (deploy/chart/files/
// prometheus-rules.yaml): every target is up, every rule evaluates healthy, none of the
// alerts fires on the healthy kit, and every query of the dashboard
// (deploy/chart/files/grafana-dashboard.json) answers with series, after a private pod
// (pulls, container decisions) and a reviewed Secret gave them something to count.
func TestPrometheusScrapesTheKitAndTheDashboardsQueriesAnswer(t *testing.T) {
	prometheus, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not installed: run scripts/setup (Debian's prometheus)")
	}
	ctx := context2(t, 5*time.Minute)
	top := mustAbs(t, filepath.Join("..", ".."))
	ns := namespace(t, ctx)
	image := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"] + "/" + kit.Desc.Images.Hello.Name
	mustSecret(t, ctx, ns, "creds", map[string]string{
		"serverAddress": kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"], "username": user(), "password": password(),
	})
	runPod(t, ctx, ns, kit.PodSpec("private", image, "creds"))
	// Registered after the Secret, which its policy (the examples') would refuse; its
	// registration probe is a review.
	webhook, _, _ := registerWebhook(t, ctx)

	var agents []string
	for _, node := range kit.Desc.Nodes {
		agents = append(agents, strconv.Quote(node.ProxyMetrics))
	}
	dir := t.TempDir()
	config := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [%q]
scrape_configs:
  - job_name: regcred-node-agent
    static_configs: [{targets: [%s]}]
  - job_name: regcred-webhook
    static_configs: [{targets: ["127.0.0.1:%d"]}]
`, filepath.Join(top, "deploy", "chart", "files", "prometheus-rules.yaml"), strings.Join(agents, ", "), webhook.metricsPort)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	logFile, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(prometheus, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address=127.0.0.1:"+strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logFile.Close()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus's log:\n%s", log)
		}
	})
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	query := func(ctx context.Context, q string) (*promResult, error) {
		return promGet(ctx, base, "/api/v1/query?query="+url.QueryEscape(q))
	}

	// Every target up.
	var last string
	err = wait.PollUntilContextTimeout(ctx, time.Second, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		r, err := query(ctx, `up{job=~"regcred-node-agent|regcred-webhook"} == 1`)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		last = fmt.Sprintf("%d of %d targets up: %+v", len(r.Data.Result), len(agents)+1, r.Data.Result)
		return len(r.Data.Result) == len(agents)+1, nil
	})
	if err != nil {
		t.Fatalf("the kit's targets are not all up: %s", last)
	}

	// Every query of the dashboard answers with series.
	raw, err := os.ReadFile(filepath.Join(top, "deploy", "chart", "files", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var board struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &board); err != nil {
		t.Fatal(err)
	}
	queries := 0
	for _, panel := range board.Panels {
		for _, target := range panel.Targets {
			queries++
			var got int
			err := wait.PollUntilContextTimeout(ctx, time.Second, 60*time.Second, true, func(ctx context.Context) (bool, error) {
				r, err := query(ctx, target.Expr)
				if err != nil {
					return false, err
				}
				got = len(r.Data.Result)
				return got > 0, nil
			})
			if err != nil {
				t.Errorf("panel %q: %s answers no series (%v)", panel.Title, target.Expr, err)
			}
		}
	}
	if queries < 10 {
		t.Errorf("the dashboard has %d queries", queries)
	}

	// The rules load and evaluate; none fires on the healthy kit.
	err = wait.PollUntilContextTimeout(ctx, time.Second, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		r, err := promGet(ctx, base, "/api/v1/rules")
		if err != nil || len(r.Data.Groups) == 0 {
			return false, nil
		}
		n := 0
		for _, g := range r.Data.Groups {
			for _, rule := range g.Rules {
				if rule.Health != "ok" {
					last = fmt.Sprintf("rule %s: health %q", rule.Name, rule.Health)
					return false, nil
				}
				n++
			}
		}
		last = fmt.Sprintf("%d rules", n)
		return n == 9, nil
	})
	if err != nil {
		t.Fatalf("the rules did not all evaluate: %s", last)
	}
	firing, err := query(ctx, `ALERTS{alertstate="firing"}`)
	if err != nil {
		t.Fatal(err)
	}
	if len(firing.Data.Result) > 0 {
		t.Errorf("alerts fire on the healthy kit: %+v", firing.Data.Result)
	}
}

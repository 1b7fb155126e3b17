// Last: no secret value anywhere it must not be (events, pod status, logs, records).

package kit

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestNoSecretValueInEventsStatusOrLogs(t *testing.T) {
	ctx := context2(t, time.Minute)
	canariesMu.Lock()
	values := append([]string(nil), canaries...)
	canariesMu.Unlock()
	// Also the base64 forms, as they would appear inside a dockerconfigjson or a header.
	for _, v := range values[:len(values):len(values)] {
		values = append(values, base64.StdEncoding.EncodeToString([]byte(v)))
	}
	if len(values) < 6 {
		t.Fatalf("only %d canaries: the tests did not run", len(values))
	}
	var texts []struct{ what, text string }
	events, err := kit.Client.CoreV1().Events("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(events.Items) == 0 {
		t.Fatal("no events at all")
	}
	for _, e := range events.Items {
		texts = append(texts, struct{ what, text string }{"event " + e.Namespace + "/" + e.Name, e.Message + " " + e.Reason})
	}
	pods, err := kit.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		status, _ := json.Marshal(p.Status)
		texts = append(texts, struct{ what, text string }{"status of pod " + p.Namespace + "/" + p.Name, string(status)})
	}
	var logs []struct{ name, path string }
	for _, node := range kit.Desc.Nodes {
		logs = append(logs, struct{ name, path string }{node.Name + "'s kubelet", node.Logs.Kubelet},
			struct{ name, path string }{node.Name + "'s cri-proxy", node.Logs.Proxy},
			struct{ name, path string }{node.Name + "'s containerd", node.Logs.Containerd})
		if kit.Desc.Mode == "nri" {
			logs = append(logs, struct{ name, path string }{node.Name + "'s regcred-nri", node.Logs.NRI})
		}
		// The records file and the NRI plugin's refusals (in containerd's and kubelet's
		// logs, checked above) must not hold a value either.
		if records, err := os.ReadFile(filepath.Join(node.ProxyRecordsDir, "pulled-images.json")); err == nil {
			texts = append(texts, struct{ what, text string }{node.Name + "'s pulled-image records", string(records)})
		}
	}
	logs = append(logs, struct{ name, path string }{"kube-apiserver", kit.Desc.Logs["kube-apiserver"]})
	for _, l := range logs {
		name := l.name
		data, err := os.ReadFile(l.path)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) == 0 {
			t.Fatalf("the %s log is empty", name)
		}
		texts = append(texts, struct{ what, text string }{name + "'s log", string(data)})
	}
	for _, text := range texts {
		for _, v := range values {
			if strings.Contains(text.text, v) {
				t.Errorf("a secret value (%d characters) appears in the %s", len(v), text.what)
			}
		}
	}
}

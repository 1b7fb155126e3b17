package kit

import (
	"encoding/json"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// `regcred explain POD` (issue 25) against a pod on the kit's second node (one node
// when the kit has one): with the user's kubeconfig (--kubeconfig), it names the node,
// each pull Secret and what became of it (missing; found, with its type), and for the
// image the pod's containers and init container share, the candidates in the order a
// pull tries them with the invalid Secret's warning; `-o json` says the same for
// scripts; no password in either output.
func TestExplainAPod(t *testing.T) {
	if kit.Desc.Mode == "credential-provider" {
		t.Skipf("the kit in %s runs without the node agent", kit.Dir)
	}
	ctx := context2(t, 3*time.Minute)
	ns := namespace(t, ctx)
	basic := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"]
	canary := "canary-" + RandomSuffix()
	mustSecret(t, ctx, ns, "invalid", map[string]string{"serverAddress": basic, "username": "a:b", "password": canary})
	mustSecret(t, ctx, ns, "good", map[string]string{"serverAddress": basic, "username": user(), "password": password()})
	nodes := kit.Nodes()
	node := nodes[len(nodes)-1]
	image := kit.Image("BASIC")
	// The same credentials in another namespace's Secret pull the image onto the node
	// first: the pod's own decision must still name its own Secret, not that one.
	other := namespace(t, ctx)
	mustSecret(t, ctx, other, "same-credentials", map[string]string{"serverAddress": basic, "username": user(), "password": password()})
	runPod(t, ctx, other, onNode(kit.PodSpec("first", image, "same-credentials"), node))
	pod := onNode(kit.PodSpec("app", image, "missing", "invalid", "good"), node)
	pod.Spec.InitContainers = []corev1.Container{{Name: "init", Image: image, Command: []string{"true"}}}
	runPod(t, ctx, ns, pod)

	run := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, regcredBinary(t), append([]string{"explain", "app", "-n", ns,
			"--kubeconfig", kit.Env["REGCRED_CLUSTER_KUBECONFIG"]}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			stderr := ""
			if exit, ok := err.(*exec.ExitError); ok {
				stderr = string(exit.Stderr)
			}
			t.Fatalf("regcred explain %v: %v\n%s%s", args, err, out, stderr)
		}
		if strings.Contains(string(out), canary) || strings.Contains(string(out), password()) {
			t.Errorf("regcred explain %v prints a password:\n%s", args, out)
		}
		return string(out)
	}

	text := run()
	t.Logf("regcred explain app -n %s:\n%s", ns, text)
	for _, want := range []string{
		"Pod " + ns + "/app on node " + node,
		"missing", "not found",
		"good                     kubernetes.io/regcredentials",
		"Image " + image + " (initContainer init, container hello)",
		"1. " + ns + "/good (matched " + basic + ")",
		"username " + user() + ", password <redacted>",
		"warning: secret " + ns + "/invalid: skipped the secret: data[username]",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the human form lacks %q", want)
		}
	}

	var doc struct {
		Pod         string `json:"pod"`
		Node        string `json:"node"`
		PullSecrets []struct {
			Name, State, Type string
		} `json:"pullSecrets"`
		Images []struct {
			Image      string   `json:"image"`
			UsedBy     []string `json:"usedBy"`
			TriesFirst string   `json:"triesFirst"`
			Candidates []struct {
				Secret     string         `json:"secret"`
				AuthConfig map[string]any `json:"authConfig"`
			} `json:"candidates"`
			Warnings []string `json:"warnings"`
		} `json:"images"`
	}
	if err := json.Unmarshal([]byte(run("-o", "json")), &doc); err != nil {
		t.Fatal(err)
	}
	// -o yaml is the same document.
	var asJSON, asYAML any
	if err := json.Unmarshal([]byte(run("-o", "json")), &asJSON); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(run("-o", "yaml")), &asYAML); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(asJSON, asYAML) {
		t.Errorf("-o yaml is not the -o json document:\n%v\n%v", asJSON, asYAML)
	}
	if doc.Pod != ns+"/app" || doc.Node != node || len(doc.PullSecrets) != 3 || len(doc.Images) != 1 {
		t.Fatalf("-o json: %+v", doc)
	}
	states := []string{doc.PullSecrets[0].State, doc.PullSecrets[1].State, doc.PullSecrets[2].State}
	if strings.Join(states, ",") != "missing,found,found" {
		t.Errorf("pull Secret states %v", states)
	}
	img := doc.Images[0]
	if img.TriesFirst != ns+"/good" || len(img.Candidates) != 1 || len(img.UsedBy) != 2 || len(img.Warnings) != 1 {
		t.Errorf("-o json image: %+v", img)
	}
	if img.Candidates[0].AuthConfig["password"] != "<redacted>" {
		t.Errorf("the candidate's password is %v, not redacted", img.Candidates[0].AuthConfig["password"])
	}
	if !strings.Contains(text, "run this again on that node with --records-dir") {
		t.Errorf("without --records-dir, the human form does not say how to see the node's records")
	}

	// On the pod's node, with the agent's records directory: what the records say.
	var records *NodeDescription
	for i := range kit.Desc.Nodes {
		if kit.Desc.Nodes[i].Name == node {
			records = &kit.Desc.Nodes[i]
		}
	}
	if records == nil {
		t.Fatalf("no description of node %s", node)
	}
	text = run("--records-dir", records.ProxyRecordsDir)
	t.Logf("with --records-dir:\n%s", text)
	for _, want := range []string{"the node's records: sha256:", " is private", "this pod is on record: allowed with " + ns + "/good"} {
		if !strings.Contains(text, want) {
			t.Errorf("the human form with --records-dir lacks %q", want)
		}
	}
	var withRecords struct {
		UID    string `json:"uid"`
		Images []struct {
			ImageIDs []string `json:"imageIds"`
			Records  *struct {
				ID, Access string
				Names      []string
				Pods       []struct{ Pod, UID, Secret string }
			} `json:"records"`
		} `json:"images"`
	}
	out := run("--records-dir", records.ProxyRecordsDir, "-o", "json")
	if err := json.Unmarshal([]byte(out), &withRecords); err != nil {
		t.Fatal(err)
	}
	got := withRecords.Images[0]
	if got.Records == nil || got.Records.Access != "private" || len(got.ImageIDs) == 0 {
		t.Fatalf("-o json with --records-dir: %s", out)
	}
	onRecord := false
	for _, p := range got.Records.Pods {
		onRecord = onRecord || (p.Pod == ns+"/app" && p.UID == withRecords.UID && p.Secret == ns+"/good")
	}
	if !onRecord || strings.Contains(out, "hmac") {
		t.Errorf("the records of %s: %s", image, out)
	}
	// Another node's records do not have this pod.
	if other := kit.FirstNode(); other.Name != node {
		text = run("--records-dir", other.ProxyRecordsDir)
		if strings.Contains(text, "this pod is on record") {
			t.Errorf("node %s's records have the pod of node %s:\n%s", other.Name, node, text)
		}
	}
}

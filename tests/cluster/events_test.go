package kit

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// regcredEvents lists the pod's Events with one of regcred's reasons.
func regcredEvents(t *testing.T, ctx context.Context, ns, pod, reason string) []corev1.Event {
	t.Helper()
	events, err := kit.PodEvents(ctx, ns, pod)
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Event
	for _, e := range events {
		if e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

// waitEvent waits for an Event of reason on the pod whose message has every one of want,
// and returns it.
func waitEvent(t *testing.T, ctx context.Context, ns, pod, reason string, want ...string) corev1.Event {
	t.Helper()
	var found corev1.Event
	err := wait.PollUntilContextTimeout(ctx, time.Second, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		for _, e := range regcredEvents(t, ctx, ns, pod, reason) {
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(e.Message, w)
			}
			if ok {
				found = e
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no %s Event on pod %s/%s with %q:%s", reason, ns, pod, want, kit.Describe(ns, pod, nil))
	}
	return found
}

// The pod says why (issue 25): the node agent writes Warning Events on the pod, with
// the node's identity, for what its user must act on. A pod naming a missing pull
// Secret, an invalid one (a username with a colon), one with a wrong password and a good
// one runs with the good one, and its events name each of the others and why: skipped
// (missing; invalid, with the rule), refused by the registry. A second pod on the node
// with no credentials is refused the now cached private image: its event says so, and
// kubelet's retries raise the count of that one Event instead of adding Events. No
// password is in any event.
func TestPodEventsSayWhy(t *testing.T) {
	if kit.Desc.Mode == "credential-provider" {
		t.Skipf("the kit in %s runs without the node agent", kit.Dir)
	}
	ctx := context2(t, 5*time.Minute)
	ns := namespace(t, ctx)
	basic := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"]
	canary := "canary-" + RandomSuffix()
	mustSecret(t, ctx, ns, "invalid", map[string]string{"serverAddress": basic, "username": "a:b", "password": canary})
	mustSecret(t, ctx, ns, "wrong", map[string]string{"serverAddress": basic, "username": user(), "password": canary})
	mustSecret(t, ctx, ns, "good", map[string]string{"serverAddress": basic, "username": user(), "password": password()})
	image := basic + "/" + kit.Desc.Images.Cached.Name
	app := kit.PodSpec("app", image, "missing", "invalid", "wrong", "good")
	runPod(t, ctx, ns, app)

	missing := waitEvent(t, ctx, ns, "app", "RegcredPullSecretSkipped", "missing", "not found")
	invalid := waitEvent(t, ctx, ns, "app", "RegcredPullSecretSkipped", ns+"/invalid", "username")
	wrong := waitEvent(t, ctx, ns, "app", "RegcredCredentialsRefused", "pull secret "+ns+"/wrong", image)
	for _, e := range []corev1.Event{missing, invalid, wrong} {
		t.Logf("%s: %s", e.Reason, e.Message)
		if e.Type != corev1.EventTypeWarning || e.Source.Component != "regcred-node-agent" || e.Source.Host != kit.Node() {
			t.Errorf("event %s: type %q, source %+v; want Warning from regcred-node-agent on %s", e.Reason, e.Type, e.Source, kit.Node())
		}
	}

	// The cached private image, without credentials: refused at container creation.
	stranger := kit.PodSpec("stranger", image)
	stranger.Spec.Containers[0].ImagePullPolicy = corev1.PullIfNotPresent
	if _, err := kit.CreatePod(ctx, ns, stranger); err != nil {
		t.Fatal(err)
	}
	refused := waitEvent(t, ctx, ns, "stranger", "RegcredImageRefused", "may not use image")
	t.Logf("%s: %s", refused.Reason, refused.Message)
	// kubelet tries again (its back-off: 10 s, then 20 s): one Event, its count raised.
	var events []corev1.Event
	err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		events = regcredEvents(t, ctx, ns, "stranger", "RegcredImageRefused")
		return len(events) == 1 && events[0].Count >= 2, nil
	})
	if err != nil {
		t.Errorf("kubelet's retries did not raise one Event's count: %d Events %+v", len(events), events)
	}

	all, err := kit.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range all.Items {
		if strings.Contains(e.Message, canary) || strings.Contains(e.Message, password()) {
			t.Errorf("event %s/%s carries a password: %s", e.Reason, e.Name, e.Message)
		}
	}
}

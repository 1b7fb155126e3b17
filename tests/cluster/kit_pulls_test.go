// Pulls through the real kubelet, in parallel.

package kit

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPulls(t *testing.T) {
	basic := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"]
	token := kit.Env["REGCRED_CLUSTER_TOKEN_REGISTRY"]

	t.Run("UsernamePasswordBareServerAddress", func(t *testing.T) {
		t.Parallel()
		ctx := context2(t, 3*time.Minute)
		ns := namespace(t, ctx)
		mustSecret(t, ctx, ns, "creds", map[string]string{"serverAddress": basic, "username": user(), "password": password()})
		pod := runPod(t, ctx, ns, kit.PodSpec("hello", kit.Image("BASIC"), "creds"))
		// The image really runs: its first line is in the container's log (through the
		// API server and the kubelet's API).
		logs, err := kit.Client.CoreV1().Pods(ns).GetLogs(pod.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil {
			t.Fatalf("the pod's log: %v", err)
		}
		if !strings.Contains(string(logs), "regcred-kit hello from") {
			t.Fatalf("the container printed %q", logs)
		}
	})

	t.Run("AuthOnly", func(t *testing.T) {
		t.Parallel()
		ctx := context2(t, 3*time.Minute)
		ns := namespace(t, ctx)
		mustSecret(t, ctx, ns, "creds", map[string]string{"serverAddress": basic, "auth": BasicAuth(user(), password())})
		runPod(t, ctx, ns, kit.PodSpec("auth-only", kit.Image("BASIC"), "creds"))
	})

	t.Run("IdentityTokenOnlyAgainstTokenRegistry", func(t *testing.T) {
		t.Parallel()
		ctx := context2(t, 3*time.Minute)
		ns := namespace(t, ctx)
		mustSecret(t, ctx, ns, "creds", map[string]string{"serverAddress": token, "identityToken": kit.Env["REGCRED_CLUSTER_REFRESH_TOKEN"]})
		runPod(t, ctx, ns, kit.PodSpec("identity-token", kit.Image("TOKEN"), "creds"))
	})

	t.Run("DockerConfigJSONOnKubeletsOwnPath", func(t *testing.T) {
		t.Parallel()
		ctx := context2(t, 3*time.Minute)
		ns := namespace(t, ctx)
		if _, err := kit.CreateDockerConfigSecret(ctx, ns, "docker", basic, user(), password()); err != nil {
			t.Fatal(err)
		}
		before := metricValue(metrics(t), `regcred_cri_proxy_pulls_total{outcome="forwarded_with_auth"}`)
		offset := proxyLogSize(t)
		runPod(t, ctx, ns, kit.PodSpec("docker", kit.Image("BASIC"), "docker"))
		after := metricValue(metrics(t), `regcred_cri_proxy_pulls_total{outcome="forwarded_with_auth"}`)
		if after <= before {
			t.Fatalf("forwarded_with_auth went from %v to %v", before, after)
		}
		lines := proxyLines(proxyLogSince(t, offset), ns, "docker")
		if !anyMessage(lines, "PullImage already carries auth; forwarded untouched") {
			t.Fatalf("the proxy did not log kubelet's own credentials as forwarded untouched: %v", lines)
		}
		if anyMessage(lines, "PullImage with credentials from pull secret") {
			t.Fatalf("the proxy injected credentials into a pull that had kubelet's: %v", lines)
		}
	})

	t.Run("NoPullSecret", func(t *testing.T) {
		t.Parallel()
		ctx := context2(t, 3*time.Minute)
		ns := namespace(t, ctx)
		event := failPod(t, ctx, ns, kit.PodSpec("anonymous", kit.Image("BASIC")), anonymousRefusal)
		t.Logf("the event: %s", event.Message)
	})

	t.Run("WrongPasswordNamesTheSecret", func(t *testing.T) {
		t.Parallel()
		ctx := context2(t, 3*time.Minute)
		ns := namespace(t, ctx)
		mustSecret(t, ctx, ns, "wrong", map[string]string{"serverAddress": basic, "username": user(), "password": wrongPassword()})
		event := failPod(t, ctx, ns, kit.PodSpec("wrong", kit.Image("BASIC"), "wrong"),
			`401 Unauthorized`, regexp.QuoteMeta("pull secret(s) "+ns+"/wrong"))
		t.Logf("the event: %s", event.Message)
	})

	t.Run("TwoSecretsFirstWrong", func(t *testing.T) {
		t.Parallel()
		ctx := context2(t, 3*time.Minute)
		ns := namespace(t, ctx)
		mustSecret(t, ctx, ns, "a-wrong", map[string]string{"serverAddress": basic, "username": user(), "password": wrongPassword()})
		mustSecret(t, ctx, ns, "b-right", map[string]string{"serverAddress": basic, "username": user(), "password": password()})
		offset := proxyLogSize(t)
		runPod(t, ctx, ns, kit.PodSpec("two", kit.Image("BASIC"), "a-wrong", "b-right"))
		lines := proxyLines(proxyLogSince(t, offset), ns, "two")
		var order []string
		for _, l := range lines {
			// The pull attempts only (CreateContainer's decision names the Secret too).
			if s, ok := l["secret"]; ok && strings.HasPrefix(fmt.Sprint(l["message"]), "PullImage") {
				order = append(order, fmt.Sprint(l["message"], " ", s))
			}
		}
		want := []string{"PullImage with pull secret failed " + ns + "/a-wrong", "PullImage with credentials from pull secret " + ns + "/b-right"}
		if strings.Join(order, "|") != strings.Join(want, "|") {
			t.Fatalf("the proxy's attempts: %q, want %q", order, want)
		}
	})

	t.Run("RotationThroughTheAPI", func(t *testing.T) {
		t.Parallel()
		ctx := context2(t, 4*time.Minute)
		ns := namespace(t, ctx)
		mustSecret(t, ctx, ns, "rotating", map[string]string{"serverAddress": basic, "username": user(), "password": wrongPassword()})
		failPod(t, ctx, ns, kit.PodSpec("before", kit.Image("BASIC"), "rotating"), regexp.QuoteMeta(ns+"/rotating"))
		secret, err := kit.Client.CoreV1().Secrets(ns).Get(ctx, "rotating", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		secret.Data["password"] = []byte(password())
		if _, err := kit.Client.CoreV1().Secrets(ns).Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		// Nothing is restarted: the next pod (and kubelet's retries) use the new password.
		runPod(t, ctx, ns, kit.PodSpec("after", kit.Image("BASIC"), "rotating"))
	})
}

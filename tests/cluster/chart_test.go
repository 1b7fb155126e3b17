package kit

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// The name the test gives regcred's image (scripts/image --name) and the overlay sets.
const (
	deployImageName = "regcred.local/regcred"
	deployImageTag  = "kit"
	deployNamespace = "regcred-system"
)

// kitProfile is the Cargo profile the kit runs.
func kitProfile() string { return kit.Desc.Profile }

// regcredPods describes every pod in regcred-system, for failure messages.
func regcredPods(ctx context.Context) string {
	pods, err := kit.Client.CoreV1().Pods(deployNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for i := range pods.Items {
		p := &pods.Items[i]
		fmt.Fprintf(&b, "\npod %s: %s", p.Name, kit.Describe(deployNamespace, p.Name, p))
	}
	return b.String()
}

// webhookReviews sums regcred_webhook_reviews_total over the webhook pods, read from
// each pod's metrics port (the pod IPs are on the kit's bridge, reachable from here).
func webhookReviews(t *testing.T, ctx context.Context) int {
	t.Helper()
	pods, err := kit.Client.CoreV1().Pods(deployNamespace).List(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=regcred-webhook",
	})
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, p := range pods.Items {
		if p.Status.PodIP == "" || p.DeletionTimestamp != nil {
			continue
		}
		resp, err := http.Get("http://" + net.JoinHostPort(p.Status.PodIP, "9090") + "/metrics")
		if err != nil {
			t.Fatalf("the metrics of webhook pod %s: %v", p.Name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, m := range regexp.MustCompile(`(?m)^regcred_webhook_reviews_total\{[^}]*\} (\d+)$`).FindAllStringSubmatch(string(body), -1) {
			n, _ := strconv.Atoi(m[1])
			total += n
		}
	}
	return total
}

// helm runs the kit's helm as cluster admin; returns its combined output.
func helm(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, kit.Desc.Binaries.Helm, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kit.Env["REGCRED_CLUSTER_KUBECONFIG"])
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// pushRegcredImage builds regcred's image from the binary the kit runs (scripts/image)
// and pushes it into the kit's public registry as IMAGE:kit, as a public image is
// served: kubelet pulls it on whichever node a pod lands, through regcred's agent, which
// records it as public. (Imported into a node's containerd by hand it would be an image
// that came without a pull regcred recorded, which regcred counts as private: issue 23,
// finding 5.) ctr pushes from a namespace of its own, which the CRI never sees. Returns
// the repository, the manifest digest and the config digest.
func pushRegcredImage(t *testing.T, ctx context.Context) (repository, manifestDigest, configDigest string) {
	t.Helper()
	return pushRegcredImageAs(t, ctx, deployImageTag)
}

// pushRegcredImageAs is pushRegcredImage as IMAGE:tag, built with scripts/image's
// further arguments (e.g. --libc gnu: another build of the same regcred).
func pushRegcredImageAs(t *testing.T, ctx context.Context, tag string, imageArgs ...string) (repository, manifestDigest, configDigest string) {
	t.Helper()
	top := mustAbs(t, filepath.Join("..", ".."))
	archive := filepath.Join(t.TempDir(), "regcred-oci.tar")
	started := time.Now()
	args := append([]string{"--profile", kitProfile(), "--out", archive, "--name", deployImageName + ":" + tag}, imageArgs...)
	out, err := exec.CommandContext(ctx, filepath.Join(top, "scripts", "image"), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/image: %v\n%s", err, out)
	}
	digest := func(kind string) string {
		m := regexp.MustCompile(`(?m)^` + kind + ` +(sha256:[0-9a-f]{64})$`).FindStringSubmatch(string(out))
		if m == nil {
			t.Fatalf("scripts/image printed no %s digest:\n%s", kind, out)
		}
		return m[1]
	}
	manifestDigest, configDigest = digest("manifest"), digest("config")
	t.Logf("scripts/image (%s %s) in %s: manifest %s", kitProfile(), strings.Join(imageArgs, " "), time.Since(started).Round(time.Millisecond), manifestDigest)
	repository = kit.Env["REGCRED_CLUSTER_PUBLIC_REGISTRY"] + "/regcred"
	image := repository + ":" + tag
	pushArgs := []string{"--address", kit.Desc.Nodes[0].ContainerdSocket, "-n", "regcred-deploy-test"}
	for _, step := range [][]string{
		{"images", "import", archive},
		{"images", "tag", "--force", deployImageName + ":" + tag, image},
		{"images", "push", "--plain-http", image},
	} {
		if out, err := exec.CommandContext(ctx, kit.Ctr(), append(pushArgs, step...)...).CombinedOutput(); err != nil {
			t.Fatalf("ctr %s: %v\n%s", strings.Join(step, " "), err, out)
		}
	}
	t.Cleanup(func() {
		_ = exec.Command(kit.Ctr(), append(pushArgs, "images", "rm", deployImageName+":"+tag, image)...).Run()
		for i := range kit.Nodes() {
			node := kit.Desc.Nodes[i].ContainerdSocket
			_ = exec.Command(kit.Ctr(), "--address", node, "-n", "k8s.io", "images", "rm", image, repository+"@"+manifestDigest).Run()
		}
	})
	return repository, manifestDigest, configDigest
}

// uninstallRelease is a chart test's clean-up: `helm uninstall` of the release (its
// hooks given that long), and whatever happened, nothing left refusing Secrets and the kit's
// node-side objects (which the install adopted) put back, for the tests after it. A
// clean-up hook that could not finish leaves the release uninstalling and its node
// DaemonSets behind: they are taken away without it.
func uninstallRelease(t *testing.T, hooks time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*hooks)
	defer cancel()
	timeout := hooks.String()
	if out, err := helm(ctx, "uninstall", "regcred", "--namespace", deployNamespace, "--ignore-not-found", "--wait", "--timeout", timeout); err != nil {
		t.Errorf("helm uninstall: %v\n%s", err, out)
		if out, err := helm(ctx, "uninstall", "regcred", "--namespace", deployNamespace, "--ignore-not-found", "--no-hooks", "--wait", "--timeout", timeout); err != nil {
			t.Errorf("helm uninstall --no-hooks: %v\n%s", err, out)
		}
		for _, ds := range []string{"regcred-node-installer", "regcred-node-uninstaller"} {
			if err := kit.Client.AppsV1().DaemonSets(deployNamespace).Delete(ctx, ds, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("deleting DaemonSet %s: %v", ds, err)
			}
		}
		if err := kit.Client.BatchV1().Jobs(deployNamespace).Delete(ctx, "regcred-node-cleanup", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting Job regcred-node-cleanup: %v", err)
		}
	}
	if err := kit.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(ctx, "regcred-webhook", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("deleting the webhook configuration: %v", err)
	}
	if out, err := kit.Cluster(ctx, "kit-objects"); err != nil {
		t.Errorf("putting the kit's node-side objects back: %v\n%s", err, out)
	}
}

// webhookTLSSecret reads the Secret the webhook keeps its certificate in.
func webhookTLSSecret(t *testing.T, ctx context.Context) *corev1.Secret {
	t.Helper()
	secret, err := kit.Client.CoreV1().Secrets(deployNamespace).Get(ctx, "regcred-webhook-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

// waitWebhookRollout waits until the Deployment has all its replicas updated and Ready,
// each pod running image.
func waitWebhookRollout(t *testing.T, ctx context.Context, image string) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, time.Second, 4*time.Minute, true, func(ctx context.Context) (bool, error) {
		d, err := kit.Client.AppsV1().Deployments(deployNamespace).Get(ctx, "regcred-webhook", metav1.GetOptions{})
		if err != nil || d.Status.ObservedGeneration < d.Generation || d.Status.UpdatedReplicas != *d.Spec.Replicas ||
			d.Status.ReadyReplicas != *d.Spec.Replicas || d.Status.Replicas != *d.Spec.Replicas {
			return false, nil
		}
		list, err := kit.Client.CoreV1().Pods(deployNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=regcred-webhook"})
		if err != nil {
			return false, nil
		}
		pods = pods[:0]
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil {
				pods = append(pods, p)
			}
		}
		for _, p := range pods {
			if p.Spec.Containers[0].Image != image {
				return false, nil
			}
		}
		return len(pods) == int(*d.Spec.Replicas), nil
	})
	if err != nil {
		t.Fatalf("the webhook Deployment did not roll out %s:%s", image, regcredPods(ctx))
	}
	return pods
}

// The chart on the kit, as an operator installs regcred: `helm install` of deploy/chart
// with regcred's own image (scripts/image, pushed to the kit's registry).
//
//   - A wrong value is refused by the chart's schema before anything is created, and
//     `helm install --dry-run=server` against the real API server prints no warning.
//   - `helm install --wait`: the webhook's pods Ready on the kit's nodes, running the
//     pushed image; no openssl, no caBundle by hand: the webhook made its CA and pair in
//     the chart's Secret and put the CA into the configuration; the API server calls the
//     pods through the Service and refuses a bad example with their verdict.
//   - Churn: valid Secrets are created without pause while the webhook renews its serving
//     certificate (made to live 90 s here, renewed with a third left) and while `helm
//     upgrade` rolls the Deployment to the image by digest: not one create fails.
//   - A private pod runs on every node (the node side is the kit's own: the kit's nodes
//     do not boot systemd, so the chart's node installer is not used here;
//     docs/node-install.md has where it is proven).
//   - `helm uninstall`: the configuration, the Deployment and the certificate's Secret
//     are gone; nothing refuses a Secret any more. The kit's node-side objects, which
//     the install adopted, are put back after (`scripts/cluster kit-objects`).
func TestHelmChartOnTheKit(t *testing.T) {
	requireBareKit(t)
	ctx := context2(t, 12*time.Minute)
	top := mustAbs(t, filepath.Join("..", ".."))
	chart := filepath.Join(top, "deploy", "chart")
	repository, manifestDigest, configDigest := pushRegcredImage(t, ctx)
	image := repository + ":" + deployImageTag
	release := []string{"regcred", chart, "--namespace", deployNamespace}
	values := []string{
		"--set", "image.repository=" + repository, "--set", "image.tag=" + deployImageTag,
		"--set", "node.mode=" + kit.Desc.Mode,
		// Short lives so the test sees a renewal: 90 s, renewed with 30 s left, checked
		// every 3 s (hidden flags; the defaults are 90 days and 5 years, every minute).
		"--set-json", `webhook.extraArgs=["--tls-cert-validity=90","--tls-check-interval=3"]`,
	}

	t.Cleanup(func() { uninstallRelease(t, 150*time.Second) })

	// 1. A wrong value: refused by values.schema.json, nothing created.
	out, err := helm(ctx, append(append([]string{"install"}, release...), append(values, "--set", "webhook.replicas=0")...)...)
	if err == nil || !strings.Contains(out, "/webhook/replicas") {
		t.Fatalf("helm install with webhook.replicas=0: want a schema error naming /webhook/replicas, got %v:\n%s", err, out)
	}
	t.Logf("a wrong value:\n%s", out)
	if listed, _ := helm(ctx, "list", "--namespace", deployNamespace, "-q"); strings.TrimSpace(listed) != "" {
		t.Fatalf("the refused install left a release: %q", listed)
	}

	// 2. The API server's own validation of every object: no warning.
	install := append(append([]string{"install"}, release...), append(values, "--take-ownership")...)
	out, err = helm(ctx, append(install, "--dry-run=server")...)
	if err != nil {
		t.Fatalf("helm install --dry-run=server: %v\n%s", err, out)
	}
	if regexp.MustCompile(`(?i)warning`).MatchString(out) {
		t.Errorf("helm install --dry-run=server printed a warning:\n%s", out)
	}
	if _, err := kit.Client.AppsV1().Deployments(deployNamespace).Get(ctx, "regcred-webhook", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the server-side dry run created the Deployment (%v)", err)
	}

	// 3. Install. The kit's node-side objects (from the same chart, applied by `up`) are
	// adopted (--take-ownership).
	started := time.Now()
	out, err = helm(ctx, append(install, "--wait", "--timeout", "5m")...)
	if err != nil {
		t.Fatalf("helm install: %v\n%s%s", err, out, regcredPods(ctx))
	}
	t.Logf("helm install --wait in %s:\n%s", time.Since(started).Round(time.Millisecond), out)
	pods := waitWebhookRollout(t, ctx, image)
	for _, p := range pods {
		c := p.Status.ContainerStatuses[0]
		if !strings.Contains(c.ImageID, strings.TrimPrefix(configDigest, "sha256:")) && !strings.Contains(c.ImageID, strings.TrimPrefix(manifestDigest, "sha256:")) {
			t.Errorf("pod %s runs %s, not the pushed image (config %s)", p.Name, c.ImageID, configDigest)
		}
		if !slices.Contains(kit.Nodes(), p.Spec.NodeName) {
			t.Errorf("pod %s on node %q, not one of the kit's %v", p.Name, p.Spec.NodeName, kit.Nodes())
		}
	}

	// 4. The certificate looked after itself: the configuration trusts the Secret's CA.
	var secret *corev1.Secret
	err = wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
		secret = webhookTLSSecret(t, ctx)
		config, err := kit.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, "regcred-webhook", metav1.GetOptions{})
		if err != nil || len(secret.Data["ca.crt"]) == 0 {
			return false, nil
		}
		for _, w := range config.Webhooks {
			if string(w.ClientConfig.CABundle) != string(secret.Data["ca.crt"]) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("the configuration's caBundle is not the Secret's ca.crt:%s", regcredPods(ctx))
	}
	if secret.Labels["app.kubernetes.io/managed-by"] != "Helm" {
		t.Errorf("Secret regcred-webhook-tls is not the chart's (labels %v): helm uninstall would leave it", secret.Labels)
	}
	firstCert := string(secret.Data["tls.crt"])

	// 5. The API server calls the pods through the Service.
	ns := namespace(t, ctx)
	inNamespace := func(path string) []byte {
		data, err := os.ReadFile(filepath.Join(top, path))
		if err != nil {
			t.Fatal(err)
		}
		return []byte(strings.Replace(string(data), "namespace: apps", "namespace: "+ns, 1))
	}
	bad := "examples/bad/username-with-colon.yaml"
	field, _ := expectation(t, filepath.Join(top, bad))
	want := "is invalid: " + strings.Replace(field, "stringData[", "data[", 1) + ": "
	var refused string
	err = wait.PollUntilContextTimeout(ctx, time.Second, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		seen := webhookReviews(t, ctx)
		out, err := kubectl(ctx, inNamespace(bad), nil, "apply", "-f", "-")
		refused = out
		if err == nil {
			t.Fatalf("%s was created, want refused:\n%s", bad, out)
		}
		return strings.Contains(out, want) && webhookReviews(t, ctx) > seen, nil
	})
	if err != nil {
		t.Fatalf("%s: no refusal naming %q by the in-cluster webhook; last kubectl output:\n%s", bad, want, refused)
	}
	t.Logf("kubectl apply -f %s:\n%s", bad, refused)

	// 6. Churn through a renewal and an upgrade.
	churnCtx, stopChurn := context.WithCancel(ctx)
	type result struct {
		created int
		failed  []string
	}
	done := make(chan result)
	go func() {
		var r result
		for i := 0; churnCtx.Err() == nil; i++ {
			s := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("churn-%d", i)},
				Type:       "kubernetes.io/regcredentials",
				StringData: map[string]string{"serverAddress": "https://registry.corp.example", "username": "u", "password": "p-" + RandomSuffix()},
			}
			if _, err := kit.Client.CoreV1().Secrets(ns).Create(churnCtx, s, metav1.CreateOptions{}); err != nil {
				if churnCtx.Err() == nil {
					r.failed = append(r.failed, err.Error())
				}
			} else {
				r.created++
			}
			time.Sleep(100 * time.Millisecond)
		}
		done <- r
	}()
	err = wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		return string(webhookTLSSecret(t, ctx).Data["tls.crt"]) != firstCert, nil
	})
	if err != nil {
		stopChurn()
		<-done
		t.Fatalf("the serving certificate (90 s) was not renewed within 2 minutes:%s", regcredPods(ctx))
	}
	t.Logf("the serving certificate was renewed; the CA stayed: %v", string(webhookTLSSecret(t, ctx).Data["ca.crt"]) == string(secret.Data["ca.crt"]))
	// Past the replicas' next check, so both serve the renewed pair during the churn.
	time.Sleep(8 * time.Second)

	upgradeImage := repository + "@" + manifestDigest
	out, err = helm(ctx, "upgrade", "regcred", chart, "--namespace", deployNamespace, "--reuse-values",
		"--set", "image.digest="+manifestDigest, "--wait", "--timeout", "5m")
	if err != nil {
		stopChurn()
		<-done
		t.Fatalf("helm upgrade: %v\n%s%s", err, out, regcredPods(ctx))
	}
	upgraded := waitWebhookRollout(t, ctx, upgradeImage)
	for _, p := range upgraded {
		for _, old := range pods {
			if p.Name == old.Name {
				t.Errorf("pod %s was not replaced by the upgrade", p.Name)
			}
		}
	}
	time.Sleep(3 * time.Second)
	stopChurn()
	r := <-done
	t.Logf("churn: %d Secrets created during the renewal and the upgrade, %d failed", r.created, len(r.failed))
	if len(r.failed) > 0 {
		t.Errorf("%d Secret creates failed during the renewal or the upgrade, first: %s", len(r.failed), r.failed[0])
	}
	if r.created < 50 {
		t.Errorf("only %d Secrets created during the churn: the churn did not run", r.created)
	}

	// 7. A private pod on every node, through the kit's node agents.
	image2 := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"] + "/" + kit.Desc.Images.Hello.Name
	mustSecret(t, ctx, ns, "creds", map[string]string{
		"serverAddress": kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"], "username": user(), "password": password(),
	})
	for i, node := range kit.Nodes() {
		runPod(t, ctx, ns, onNode(kit.PodSpec(fmt.Sprintf("private-%d", i), image2, "creds"), node))
	}

	// 8. Uninstall: everything the chart made is gone, the certificate's Secret too, and
	// nothing refuses a Secret.
	out, err = helm(ctx, "uninstall", "regcred", "--namespace", deployNamespace, "--wait", "--timeout", "150s")
	if err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	if _, err := kit.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, "regcred-webhook", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the webhook configuration is still there after helm uninstall (%v)", err)
	}
	for _, get := range []func() error{
		func() error {
			_, err := kit.Client.AppsV1().Deployments(deployNamespace).Get(ctx, "regcred-webhook", metav1.GetOptions{})
			return err
		},
		func() error {
			_, err := kit.Client.CoreV1().Secrets(deployNamespace).Get(ctx, "regcred-webhook-tls", metav1.GetOptions{})
			return err
		},
	} {
		if err := get(); !apierrors.IsNotFound(err) {
			t.Errorf("left after helm uninstall (%v)", err)
		}
	}
	if out, err := kubectl(ctx, inNamespace(bad), nil, "create", "--dry-run=server", "-f", "-"); err != nil {
		t.Errorf("after helm uninstall a Secret is still refused: %v\n%s", err, out)
	}
}

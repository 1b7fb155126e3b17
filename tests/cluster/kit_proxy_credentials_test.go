// Serial: the proxy's credentials (these tests restart the proxy, so nothing else runs).

package kit

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// The opt-in ServiceAccount mode the chart ships (node.apiCredentials=serviceAccount) is
// exactly enough: `get` on any pod, `get` on Secrets only in a namespace that applied
// its secrets-rolebinding.yaml, nothing more. (By default the proxy uses the kubelet's
// credentials instead: TestProxyWithNodeCredentials.)
func TestProxyRBACFromDeployIsExactlyEnough(t *testing.T) {
	ctx := context2(t, time.Minute)
	bound := namespace(t, ctx)
	unbound := namespace(t, ctx)
	binding := filepath.Join("..", "..", "deploy", "cri-proxy", "secrets-rolebinding.yaml")
	if out, err := exec.CommandContext(ctx, kit.Env["REGCRED_CLUSTER_KUBECTL"], "--kubeconfig", kit.Env["REGCRED_CLUSTER_KUBECONFIG"],
		"apply", "-n", bound, "-f", binding).CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply -n %s -f %s: %v\n%s", bound, binding, err, out)
	}
	sa := "system:serviceaccount:regcred-system:regcred-cri-proxy"
	cases := []struct {
		namespace, verb, resource string
		allowed                   bool
	}{
		{unbound, "get", "pods", true}, {bound, "get", "pods", true},
		{bound, "get", "secrets", true}, {unbound, "get", "secrets", false},
		{bound, "list", "secrets", false}, {bound, "watch", "secrets", false}, {unbound, "list", "pods", false},
		{bound, "create", "secrets", false}, {bound, "update", "secrets", false}, {unbound, "delete", "pods", false},
		{bound, "get", "configmaps", false}, {"", "get", "nodes", false},
		// The pods' Events (the agent's RegcredPullSecretSkipped, ...), nothing more.
		{unbound, "create", "events", true}, {unbound, "patch", "events", true},
		{unbound, "list", "events", false}, {unbound, "delete", "events", false},
	}
	for _, c := range cases {
		review, err := kit.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   sa,
				Groups: []string{"system:serviceaccounts", "system:serviceaccounts:regcred-system", "system:authenticated"},
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Namespace: c.namespace, Verb: c.verb, Resource: c.resource,
				},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if review.Status.Allowed != c.allowed {
			t.Errorf("%s %s %s in %q: allowed=%v, want %v (%s)", sa, c.verb, c.resource, c.namespace, review.Status.Allowed, c.allowed, review.Status.Reason)
		}
	}
}

// With deploy/'s Secret role bound in one namespace only, a pod there runs, and a pod
// whose Secret is in a namespace the proxy may not read fails with a message saying so.
func TestProxySecretInNamespaceItMayNotRead(t *testing.T) {
	ctx := context2(t, 5*time.Minute)
	allowed := namespace(t, ctx)
	denied := namespace(t, ctx)
	saName := "kit-narrow-" + RandomSuffix()
	sa, err := kit.Client.CoreV1().ServiceAccounts(allowed).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: saName},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: allowed}}
	// The chart's roles (node.apiCredentials=serviceAccount): pods everywhere (so the failure is
	// about the Secret), Secrets only in `allowed`.
	podsBinding := saName + "-pods"
	t.Cleanup(func() {
		_ = kit.Client.RbacV1().ClusterRoleBindings().Delete(context.Background(), podsBinding, metav1.DeleteOptions{})
	})
	if _, err := kit.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: podsBinding},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "regcred-cri-proxy-pods"},
		Subjects:   subject,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kit.Client.RbacV1().RoleBindings(allowed).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "regcred-cri-proxy-secrets"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "regcred-cri-proxy-secrets"},
		Subjects:   subject,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	token, err := kit.Client.CoreV1().ServiceAccounts(allowed).CreateToken(ctx, sa.Name, &authenticationToken, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	config := clientcmd.GetConfigFromFileOrDie(kit.Env["REGCRED_CLUSTER_KUBECONFIG"])
	for _, auth := range config.AuthInfos {
		auth.ClientCertificate, auth.ClientKey, auth.Token = "", "", token.Status.Token
	}
	kubeconfig := filepath.Join(t.TempDir(), "narrow.kubeconfig")
	if err := clientcmd.WriteToFile(*config, kubeconfig); err != nil {
		t.Fatal(err)
	}
	restartProxy(t, ctx, "--kubeconfig", kubeconfig)

	for _, ns := range []string{allowed, denied} {
		mustSecret(t, ctx, ns, "creds", map[string]string{
			"serverAddress": kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"], "username": user(), "password": password(),
		})
	}
	runPod(t, ctx, allowed, kit.PodSpec("readable", kit.Image("BASIC"), "creds"))
	event := failPod(t, ctx, denied, kit.PodSpec("unreadable", kit.Image("BASIC"), "creds"),
		anonymousRefusal, `regcred: pull secret\(s\) of pod `+denied+`/unreadable that could not be read, so not used: `+denied+`/creds: 403 Forbidden`,
		`secrets "creds" is forbidden`, `cannot get resource "secrets"`, `in the namespace "`+denied+`"`)
	t.Logf("the event: %s", event.Message)
}

var authenticationToken = authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}

func ptr[T any](v T) *T { return &v }

// The Node-authorizer mode: the proxy with the kubelet's own credentials pulls for pods on
// its node, and those credentials read only the Secrets such pods reference.
func TestProxyWithNodeCredentials(t *testing.T) {
	ctx := context2(t, 5*time.Minute)
	restartProxy(t, ctx, "node")
	ns := namespace(t, ctx)
	mustSecret(t, ctx, ns, "creds", map[string]string{
		"serverAddress": kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"], "username": user(), "password": password(),
	})
	mustSecret(t, ctx, ns, "unused", map[string]string{
		"serverAddress": kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"], "username": user(), "password": password(),
	})
	offset := proxyLogSize(t)
	runPod(t, ctx, ns, kit.PodSpec("node-mode", kit.Image("BASIC"), "creds"))
	if lines := proxyLines(proxyLogSince(t, offset), ns, "node-mode"); !anyMessage(lines, "PullImage with credentials from pull secret") {
		t.Fatalf("the proxy did not log a pull with the Secret for %s/node-mode: %v", ns, lines)
	}

	nodeConfig, err := clientcmd.BuildConfigFromFlags("", kit.FirstNode().KubeletKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	node := kubernetes.NewForConfigOrDie(nodeConfig)
	if _, err := node.CoreV1().Secrets(ns).Get(ctx, "creds", metav1.GetOptions{}); err != nil {
		t.Fatalf("the node cannot read the Secret of its own pod: %v", err)
	}
	_, err = node.CoreV1().Secrets(ns).Get(ctx, "unused", metav1.GetOptions{})
	if !IsForbidden(err) {
		t.Fatalf("the node read a Secret no pod of it references: %v", err)
	}
	t.Logf("a Secret no pod on the node uses: %v", err)
}

// restartProxy restarts the proxy with other credentials and restores deploy/'s
// ServiceAccount when the test ends.
func restartProxy(t *testing.T, ctx context.Context, args ...string) {
	t.Helper()
	// The mode the kit runs the proxy in now, restored after the test.
	before := []string{"node"}
	if mode, err := os.ReadFile(kit.FirstNode().ProxyModeFile); err == nil {
		switch m := strings.TrimSpace(string(mode)); m {
		case "sa", "node":
			before = []string{m}
		default:
			before = []string{"--kubeconfig", m}
		}
	}
	if _, err := kit.Cluster(ctx, append([]string{"proxy"}, args...)...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := kit.Cluster(context.Background(), append([]string{"proxy"}, before...)...); err != nil {
			t.Errorf("restoring the proxy: %v", err)
		}
	})
}

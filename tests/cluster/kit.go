// Package kit drives a running regcred kit (scripts/cluster): its environment file, a
// client-go client for its API server, and helpers that make namespaces, Secrets and pods
// pinned to the kit's node and wait on their real status and events.
package kit

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// EnvFileVar names the variable that points at a running kit's cluster.env.
const EnvFileVar = "REGCRED_CLUSTER_ENV"

// RegcredSecretType is the Secret type regcred makes usable as a pull secret.
const RegcredSecretType corev1.SecretType = "kubernetes.io/regcredentials"

// EnvNames are the names cluster.env has, exactly.
var EnvNames = []string{
	"REGCRED_CLUSTER_KUBECONFIG", "REGCRED_CLUSTER_KUBECTL", "REGCRED_CLUSTER_NODE",
	"REGCRED_CLUSTER_BASIC_REGISTRY", "REGCRED_CLUSTER_TOKEN_REGISTRY", "REGCRED_CLUSTER_PUBLIC_REGISTRY",
	"REGCRED_CLUSTER_BASIC_USERNAME", "REGCRED_CLUSTER_BASIC_PASSWORD", "REGCRED_CLUSTER_REFRESH_TOKEN",
	"REGCRED_CLUSTER_IMAGE", "REGCRED_CLUSTER_PROXY_LOG", "REGCRED_CLUSTER_PROXY_SOCKET",
	"REGCRED_CLUSTER_NODES", "REGCRED_CLUSTER_RUNTIME", "REGCRED_CLUSTER_HELM", "REGCRED_CLUSTER_CTR",
}

// Kit is a running kit.
type Kit struct {
	// Env is cluster.env.
	Env map[string]string
	// Dir is the kit's directory (where cluster.env is).
	Dir string
	// Desc is DIR/kit.json, the typed description `up` writes: the only file of DIR the
	// tests read besides cluster.env.
	Desc   Description
	Config *rest.Config
	Client kubernetes.Interface
	// Script is scripts/cluster.
	Script string
}

// Description is DIR/kit.json: everything a test may need to know of a running kit.
type Description struct {
	Version    int    `json:"version"`
	Dir        string `json:"dir"`
	Kubeconfig string `json:"kubeconfig"`
	APIServer  string `json:"apiServer"`
	Profile    string `json:"profile"`
	Kubernetes string `json:"kubernetes"`
	// Mode is nri (regcred-nri decides at container creation; kubelet's runtime endpoint
	// is containerd's) or runtime-proxy (legacy: kubelet's runtime endpoint is the proxy).
	Mode string `json:"mode"`
	// NRITolerationAnnotation lets a pod's containers start while regcred-nri is away.
	NRITolerationAnnotation string                                                     `json:"nriTolerationAnnotation"`
	Binaries                struct{ Kubectl, Helm, Ctr, Runc, RegcredNri, Kit string } `json:"binaries"`
	Runtime                 struct{ Name, Version, BinDir string }                     `json:"runtime"`
	// CA is the kit's certificate authority (PEM files), which signs every client and
	// serving certificate of the kit, kubelets' included.
	CA          struct{ Cert, Key string }                        `json:"ca"`
	Registries  struct{ Basic, Token, Public, TokenRealm string } `json:"registries"`
	Credentials struct{ Username, Password, RefreshToken string } `json:"credentials"`
	Images      struct {
		Hello     ImageDescription `json:"hello"`
		Cached    ImageDescription `json:"cached"`
		Open      ImageDescription `json:"open"`
		Preloaded ImageDescription `json:"preloaded"`
		Pause     ImageDescription `json:"pause"`
	} `json:"images"`
	// Logs and PidFiles of the control plane's parts and the registries, by part name.
	Logs     map[string]string `json:"logs"`
	PidFiles map[string]string `json:"pidFiles"`
	Nodes    []NodeDescription `json:"nodes"`
}

// ImageDescription is one of the kit's images: its name (without registry), image ID
// and manifest digest where known, and an archive to import by hand.
type ImageDescription struct {
	Name    string `json:"name"`
	ID      string `json:"id"`
	Digest  string `json:"digest"`
	Archive string `json:"archive"`
}

// NodeDescription is one node of the kit.
type NodeDescription struct {
	Name              string                                                       `json:"name"`
	IP                string                                                       `json:"ip"`
	Dir               string                                                       `json:"dir"`
	ContainerdSocket  string                                                       `json:"containerdSocket"`
	NRISocket         string                                                       `json:"nriSocket"`
	ProxySocket       string                                                       `json:"proxySocket"`
	DecisionsSocket   string                                                       `json:"decisionsSocket"`
	ProxyMetrics      string                                                       `json:"proxyMetrics"`
	KubeletKubeconfig string                                                       `json:"kubeletKubeconfig"`
	KubeletConfig     string                                                       `json:"kubeletConfig"`
	ProxyRecordsDir   string                                                       `json:"proxyRecordsDir"`
	ProxyModeFile     string                                                       `json:"proxyModeFile"`
	Logs              struct{ Kubelet, Containerd, Proxy, NRI string }             `json:"logs"`
	PidFiles          struct{ Kubelet, Containerd, Proxy, ProxyChild, NRI string } `json:"pidFiles"`
}

// ReadEnvFile parses NAME=value lines (a value may be single-quoted).
func ReadEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	env := map[string]string{}
	scanner := bufio.NewScanner(f)
	for n := 1; scanner.Scan(); n++ {
		line := strings.TrimSpace(scanner.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: not NAME=value", path, n)
		}
		// A value with a space is single-quoted, so that the file stays one a shell can
		// source (REGCRED_CLUSTER_RUNTIME='containerd 2.3.7').
		if len(value) >= 2 && value[0] == '\'' && value[len(value)-1] == '\'' {
			value = value[1 : len(value)-1]
		}
		env[name] = value
	}
	return env, scanner.Err()
}

// Load reads the kit whose cluster.env is at envFile.
func Load(envFile, script string) (*Kit, error) {
	env, err := ReadEnvFile(envFile)
	if err != nil {
		return nil, fmt.Errorf("reading the kit's environment: %w", err)
	}
	for _, name := range EnvNames {
		if env[name] == "" {
			return nil, fmt.Errorf("%s has no %s", envFile, name)
		}
	}
	dir := filepath.Dir(envFile)
	var desc Description
	data, err := os.ReadFile(filepath.Join(dir, "kit.json"))
	if err != nil {
		return nil, fmt.Errorf("reading the kit's description: %w", err)
	}
	if err := json.Unmarshal(data, &desc); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "kit.json"), err)
	}
	if desc.Version != 1 || len(desc.Nodes) == 0 {
		return nil, fmt.Errorf("%s: version %d with %d nodes; this test suite reads version 1 with a node or more",
			filepath.Join(dir, "kit.json"), desc.Version, len(desc.Nodes))
	}
	config, err := clientcmd.BuildConfigFromFlags("", env["REGCRED_CLUSTER_KUBECONFIG"])
	if err != nil {
		return nil, fmt.Errorf("the kit's kubeconfig: %w", err)
	}
	config.QPS, config.Burst = 100, 200
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return nil, err
	}
	return &Kit{Env: env, Dir: dir, Desc: desc, Config: config, Client: client, Script: script}, nil
}

// Node is the kit's first node's name.
func (k *Kit) Node() string { return k.Env["REGCRED_CLUSTER_NODE"] }

// Nodes are the names of all the kit's nodes, the first first.
func (k *Kit) Nodes() []string { return strings.Split(k.Env["REGCRED_CLUSTER_NODES"], ",") }

// FirstNode is the description of the kit's first node (the one kit.Node() names).
func (k *Kit) FirstNode() *NodeDescription { return &k.Desc.Nodes[0] }

// Ctr is the path of the ctr client of the kit's runtime (containerd 2.x's ctr for a
// containerd 2.x kit, not whatever ctr is first on PATH).
func (k *Kit) Ctr() string { return k.Desc.Binaries.Ctr }

// Image is the image reference REGISTRY/REGCRED_CLUSTER_IMAGE, registry one of
// BASIC, TOKEN, PUBLIC.
func (k *Kit) Image(registry string) string {
	return k.Env["REGCRED_CLUSTER_"+registry+"_REGISTRY"] + "/" + k.Env["REGCRED_CLUSTER_IMAGE"]
}

// Cluster runs scripts/cluster ARGS --dir DIR and returns its combined output.
func (k *Kit) Cluster(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, k.Script, append(args, "--dir", k.Dir)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("scripts/cluster %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// KitProgram runs the kit's own program (regcred-kit) with ARGS --dir DIR: its `cert`
// and `ca` are the test tree's one certificate writer (the Go tests make no certificate
// of their own).
func (k *Kit) KitProgram(ctx context.Context, args ...string) error {
	program := k.Desc.Binaries.Kit
	if program == "" {
		// A kit.json from before the kit was a program of its own: scripts/cluster passes
		// cert and ca on.
		program = k.Script
	}
	cmd := exec.CommandContext(ctx, program, append(args, "--dir", k.Dir)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("regcred-kit %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// Cert issues a certificate with `regcred-kit cert ARGS --out OUT --name NAME` and
// returns the parsed certificate; its files are OUT/NAME.crt and OUT/NAME.key.
func (k *Kit) Cert(ctx context.Context, out, name string, args ...string) (*x509.Certificate, error) {
	if err := k.KitProgram(ctx, append([]string{"cert", "--out", out, "--name", name}, args...)...); err != nil {
		return nil, err
	}
	file := filepath.Join(out, name+".crt")
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return x509.ParseCertificate(block.Bytes)
}

// ClusterEnv is Cluster with more environment variables (NAME=value) for the script.
func (k *Kit) ClusterEnv(ctx context.Context, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, k.Script, append(args, "--dir", k.Dir)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("scripts/cluster %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// RandomSuffix is 8 random hex digits, for names and canary values.
func RandomSuffix() string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// CreateNamespace makes a namespace named prefix-RANDOM and waits for its default
// ServiceAccount (pods are refused until it exists).
func (k *Kit) CreateNamespace(ctx context.Context, prefix string) (string, error) {
	name := strings.ToLower(prefix) + "-" + RandomSuffix()
	_, err := k.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: name, Labels: map[string]string{"regcred.io/kit-test": "true"},
	}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("creating namespace %s: %w", name, err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := k.Client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		return "", fmt.Errorf("namespace %s has no default ServiceAccount: %w", name, err)
	}
	return name, nil
}

// DeleteNamespace deletes a namespace and does not wait.
func (k *Kit) DeleteNamespace(ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = k.Client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
}

// CreateRegcredSecret makes a kubernetes.io/regcredentials Secret with these stringData keys.
func (k *Kit) CreateRegcredSecret(ctx context.Context, ns, name string, data map[string]string) (*corev1.Secret, error) {
	return k.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Type:       RegcredSecretType,
		StringData: data,
	}, metav1.CreateOptions{})
}

// BasicAuth is base64 of user:password (Docker's and regcred's `auth`).
func BasicAuth(user, password string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
}

// CreateDockerConfigSecret makes a kubernetes.io/dockerconfigjson Secret with one entry.
func (k *Kit) CreateDockerConfigSecret(ctx context.Context, ns, name, registry, user, password string) (*corev1.Secret, error) {
	config, err := json.Marshal(map[string]any{"auths": map[string]any{
		registry: map[string]string{"auth": BasicAuth(user, password)},
	}})
	if err != nil {
		return nil, err
	}
	return k.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: config},
	}, metav1.CreateOptions{})
}

// PodSpec is a pod pinned to the kit's node (spec.nodeName: no scheduler involved) running
// image with these pull secrets, pulling on every start (imagePullPolicy Always), so each
// pod's own credentials are what the registry sees.
func (k *Kit) PodSpec(name, image string, pullSecrets ...string) *corev1.Pod {
	grace := int64(1)
	automount := false
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeName:                      k.Node(),
			TerminationGracePeriodSeconds: &grace,
			AutomountServiceAccountToken:  &automount,
			Containers: []corev1.Container{{
				Name:            "hello",
				Image:           image,
				ImagePullPolicy: corev1.PullAlways,
			}},
		},
	}
	for _, s := range pullSecrets {
		pod.Spec.ImagePullSecrets = append(pod.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: s})
	}
	return pod
}

// CreatePod creates pod in ns.
func (k *Kit) CreatePod(ctx context.Context, ns string, pod *corev1.Pod) (*corev1.Pod, error) {
	created, err := k.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating pod %s/%s: %w", ns, pod.Name, err)
	}
	return created, nil
}

// WaitRunning waits until the pod is Running with its container started; the error holds
// the pod's status and events when it is not.
func (k *Kit) WaitRunning(ctx context.Context, ns, name string, timeout time.Duration) (*corev1.Pod, error) {
	var last *corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		pod, err := k.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = pod
		if pod.Status.Phase != corev1.PodRunning {
			return false, nil
		}
		for _, c := range pod.Status.ContainerStatuses {
			if c.State.Running == nil {
				return false, nil
			}
		}
		return len(pod.Status.ContainerStatuses) > 0, nil
	})
	if err != nil {
		return last, fmt.Errorf("pod %s/%s not Running after %s: %s", ns, name, timeout, k.Describe(ns, name, last))
	}
	return last, nil
}

// Describe is the pod's phase, container states and events, for failure messages.
func (k *Kit) Describe(ns, name string, pod *corev1.Pod) string {
	var b strings.Builder
	if pod != nil {
		fmt.Fprintf(&b, "phase %s", pod.Status.Phase)
		for _, c := range pod.Status.ContainerStatuses {
			switch {
			case c.State.Waiting != nil:
				fmt.Fprintf(&b, "; %s waiting %s: %s", c.Name, c.State.Waiting.Reason, c.State.Waiting.Message)
			case c.State.Running != nil:
				fmt.Fprintf(&b, "; %s running", c.Name)
			case c.State.Terminated != nil:
				fmt.Fprintf(&b, "; %s terminated %s", c.Name, c.State.Terminated.Reason)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	events, err := k.PodEvents(ctx, ns, name)
	if err == nil {
		for _, e := range events {
			fmt.Fprintf(&b, "\n  event %s %s: %s", e.Type, e.Reason, e.Message)
		}
	}
	return b.String()
}

// PodEvents lists the events about one pod.
func (k *Kit) PodEvents(ctx context.Context, ns, name string) ([]corev1.Event, error) {
	list, err := k.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{
		FieldSelector: fields.AndSelectors(
			fields.OneTermEqualSelector("involvedObject.kind", "Pod"),
			fields.OneTermEqualSelector("involvedObject.name", name),
		).String(),
	})
	if err != nil {
		return nil, err
	}
	return list.Items, nil
}

// WaitPullFailure waits until the pod has a Failed event (kubelet's ErrImagePull) whose
// message matches every pattern, and its container waits with ErrImagePull or
// ImagePullBackOff; it returns that event.
func (k *Kit) WaitPullFailure(ctx context.Context, ns, name string, timeout time.Duration, patterns ...*regexp.Regexp) (*corev1.Event, *corev1.Pod, error) {
	return k.waitFailure(ctx, ns, name, timeout, "pull failure", []string{"ErrImagePull", "ImagePullBackOff"}, patterns)
}

// WaitCreateFailure waits until the pod has a Failed event whose message matches every
// pattern and its container waits with CreateContainerError (the runtime, here the
// proxy, refused CreateContainer); it returns that event.
func (k *Kit) WaitCreateFailure(ctx context.Context, ns, name string, timeout time.Duration, patterns ...*regexp.Regexp) (*corev1.Event, *corev1.Pod, error) {
	return k.waitFailure(ctx, ns, name, timeout, "CreateContainerError", []string{"CreateContainerError"}, patterns)
}

// waitFailure waits until a container of the pod waits with one of reasons and a Failed
// event matches every pattern.
func (k *Kit) waitFailure(ctx context.Context, ns, name string, timeout time.Duration, what string, reasons []string, patterns []*regexp.Regexp) (*corev1.Event, *corev1.Pod, error) {
	var found *corev1.Event
	var last *corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		pod, err := k.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = pod
		waiting := false
		for _, c := range pod.Status.ContainerStatuses {
			if w := c.State.Waiting; w != nil && slices.Contains(reasons, w.Reason) {
				waiting = true
			}
		}
		events, err := k.PodEvents(ctx, ns, name)
		if err != nil {
			return false, nil
		}
		for i := range events {
			if e := &events[i]; e.Reason == "Failed" && matchesAll(e.Message, patterns) {
				found = e
			}
		}
		return waiting && found != nil, nil
	})
	if err != nil {
		return nil, last, fmt.Errorf("pod %s/%s: no %s matching %v after %s: %s", ns, name, what, patterns, timeout, k.Describe(ns, name, last))
	}
	return found, last, nil
}

func matchesAll(s string, patterns []*regexp.Regexp) bool {
	for _, p := range patterns {
		if !p.MatchString(s) {
			return false
		}
	}
	return true
}

// IsForbidden says whether err is the API's 403.
func IsForbidden(err error) bool { return apierrors.IsForbidden(err) }

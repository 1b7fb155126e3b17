package kit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// kitAuthority is the kit's certificate authority, which signs kubelets' client
// certificates.
type kitAuthority struct {
	cert   *x509.Certificate
	signer any
}

func kitCA(t *testing.T) *kitAuthority {
	t.Helper()
	certPEM, err := os.ReadFile(kit.Desc.CA.Cert)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(kit.Desc.CA.Key)
	if err != nil {
		t.Fatal(err)
	}
	certBlock, _ := pem.Decode(certPEM)
	keyBlock, _ := pem.Decode(keyPEM)
	if certBlock == nil || keyBlock == nil {
		t.Fatalf("the kit's CA files %s and %s hold no PEM", kit.Desc.CA.Cert, kit.Desc.CA.Key)
	}
	cert, err := x509.ParseCertificate(certBlock.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.ParsePKCS8PrivateKey(keyBlock.Bytes)
	if err != nil {
		if key, err = x509.ParsePKCS1PrivateKey(keyBlock.Bytes); err != nil {
			t.Fatalf("the kit's CA key: %v", err)
		}
	}
	return &kitAuthority{cert: cert, signer: key}
}

// kubeletClientPEM is a client certificate and key for node, as kubelet keeps them
// (one PEM file, certificate then key), valid until notAfter.
func (ca *kitAuthority) kubeletClientPEM(t *testing.T, node string, notAfter time.Time) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}},
		NotBefore:    time.Now().Add(-time.Minute), NotAfter: notAfter,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca.cert, &key.PublicKey, ca.signer)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})...)
}

// rotateKubeletClient does what kubelet's certificate manager does: writes
// kubelet-client-STAMP.pem and turns kubelet-client-current.pem to it, by rename.
func rotateKubeletClient(t *testing.T, dir string, pemBytes []byte) {
	t.Helper()
	name := fmt.Sprintf("kubelet-client-%d.pem", time.Now().UnixNano())
	if err := os.WriteFile(filepath.Join(dir, name), pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "kubelet-client-current.pem.tmp")
	_ = os.Remove(link)
	if err := os.Symlink(name, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(link, filepath.Join(dir, "kubelet-client-current.pem")); err != nil {
		t.Fatal(err)
	}
}

// The node agent reads the pod's Secrets with the kubelet's own credentials. kubelet
// rotates its client certificate; the agent must follow it, or once the first
// certificate expires every read is refused and pods pull without their Secrets
// (issue 23, finding 8).
func TestKubeletClientCertificateRotation(t *testing.T) {
	ctx := context2(t, 4*time.Minute)
	ca := kitCA(t)
	node := kit.Node()
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	if err := os.Mkdir(pki, 0o700); err != nil {
		t.Fatal(err)
	}
	// The first certificate lives long enough for one pod to start with it.
	const firstLife = 30 * time.Second
	expires := time.Now().Add(firstLife)
	rotateKubeletClient(t, pki, ca.kubeletClientPEM(t, node, expires))
	current := filepath.Join(pki, "kubelet-client-current.pem")
	kubeconfig := filepath.Join(dir, "kubelet.kubeconfig")
	config := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kit
  cluster: {server: %q, certificate-authority: %q}
users:
- name: node
  user: {client-certificate: %q, client-key: %q}
contexts:
- name: node
  context: {cluster: kit, user: node}
current-context: node
`, kit.Desc.APIServer, kit.Desc.CA.Cert, current, current)
	if err := os.WriteFile(kubeconfig, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	restartProxy(t, ctx, "--kubeconfig", kubeconfig)
	offset := proxyLogSize(t)

	basic := kit.Env["REGCRED_CLUSTER_BASIC_REGISTRY"]
	start := func(ns string) {
		t.Helper()
		mustSecret(t, ctx, ns, "creds", map[string]string{"serverAddress": basic, "username": user(), "password": password()})
		pod := kit.PodSpec("hello", kit.Image("BASIC"), "creds")
		pod.Spec.NodeName = node
		runPod(t, ctx, ns, pod)
	}
	start(namespace(t, ctx))
	if time.Now().After(expires) {
		t.Fatalf("the first pod took longer than the first certificate's %v life; the test proves nothing", firstLife)
	}
	// Nothing changed yet: the agent has not rebuilt its client (it once did at its first
	// look at the files, comparing the kubeconfig alone with the kubeconfig and its
	// certificate).
	if logged := proxyLogSince(t, offset); strings.Contains(logged, "the Kubernetes client was rebuilt") {
		t.Errorf("the agent rebuilt its client before anything changed:\n%s", logged)
	}

	// kubelet rotates; then the first certificate expires.
	rotateKubeletClient(t, pki, ca.kubeletClientPEM(t, node, time.Now().Add(time.Hour)))
	time.Sleep(time.Until(expires) + 2*time.Second)

	// A pod in a new namespace: nothing cached, so its Secrets are read now.
	start(namespace(t, ctx))
	logged := proxyLogSince(t, offset)
	if !strings.Contains(logged, "the Kubernetes client was rebuilt") {
		t.Errorf("the agent did not log that it rebuilt its client:\n%s", logged)
	}
}

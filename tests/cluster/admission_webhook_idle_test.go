// Idle TLS+HTTP/2 clients cannot keep the API server's reviews out of the webhook (issue 23).

package kit

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// idleH2Client opens a TLS connection to the webhook from source and starts an HTTP/2
// client on it (which answers the server's pings, as any real client does) that sends
// no request; nil when the server did not let it in within two seconds.
func idleH2Client(w *webhookProcess, source string) io.Closer {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(w.caPEM)
	dialer := &net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	conn, err := tls.DialWithDialer(dialer, "tcp", "127.0.0.1:"+strconv.Itoa(w.port),
		&tls.Config{RootCAs: pool, NextProtos: []string{"h2"}})
	if err != nil {
		return nil
	}
	client, err := (&http2.Transport{}).NewClientConn(conn)
	if err != nil {
		conn.Close()
		return nil
	}
	return client
}

// 300 clients that open a TLS+HTTP/2 connection and then sit idle, from the API
// server's own address, cannot keep the API server out: its reviews go on within its
// timeout (issue 23, finding 6). Before the fix they held all 256 slots forever and the
// API server's new connection waited in the listen queue past its 5 s timeout.
func TestWebhookIdleClientsCannotHoldItsConnections(t *testing.T) {
	ctx := context2(t, 4*time.Minute)
	w, _, _ := registerWebhook(t, ctx)
	// A fresh process: the API server's connection to the old one is gone, it needs a
	// new one after the idle clients came.
	w.stop()
	startWebhook(t, w)

	var (
		idle []io.Closer
		mu   sync.Mutex
		wg   sync.WaitGroup
	)
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for i := 0; i < 300; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c := idleH2Client(w, "127.0.0.1"); c != nil {
				mu.Lock()
				idle = append(idle, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("%d of 300 idle clients connected", len(idle))

	ns := namespace(t, ctx)
	for i := 0; i < 10; i++ {
		secret := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("after-idle-%d", i), Namespace: ns},
			Type:       "kubernetes.io/regcredentials",
			StringData: map[string]string{"serverAddress": "https://registry.corp.example", "username": "u", "password": "p"},
		}
		started := time.Now()
		if _, err := kit.Client.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
			t.Fatalf("Secret %d with %d idle clients connected, after %v: %v", i, len(idle), time.Since(started), err)
		}
	}
	// And the webhook still decides: a broken one is refused by it, naming the field.
	broken := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "broken", Namespace: ns},
		Type:       "kubernetes.io/regcredentials",
		StringData: map[string]string{"username": "u", "password": "p"},
	}
	_, err := kit.Client.CoreV1().Secrets(ns).Create(ctx, broken, metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), "serverAddress") || strings.Contains(err.Error(), "failed calling webhook") {
		t.Fatalf("the broken Secret: want the webhook's refusal naming serverAddress, got %v", err)
	}
}

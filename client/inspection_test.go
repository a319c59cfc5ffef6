package client_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/burrowtun/burrow/certs"
	"github.com/burrowtun/burrow/client"
)

// inspectingProxy listens on loopback and does to each connection what a
// TLS-inspecting proxy does: it terminates the TLS with a certificate for
// 127.0.0.1 that its own CA ("CN=Test Inspection CA") issues, opens its own
// TLS connection to backend without verifying it, and copies the bytes
// between the two. It returns its address.
func inspectingProxy(t *testing.T, backend string) string {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test Inspection CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER, caDER}, PrivateKey: key}},
		NextProtos:   []string{"http/1.1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				up, err := tls.Dial("tcp", backend, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{})
				go func() {
					io.Copy(up, c)
					up.CloseWrite()
					close(done)
				}()
				io.Copy(c, up)
				c.Close()
				<-done
			})
		}
	})
	return l.Addr().String()
}

// TestInspectionOldServer: through an inspecting proxy, a client pinning a
// server that predates end-to-end sessions (it asks for the credentials the
// request did not carry) fails with one line naming the proxy's issuer and
// the wire versions, and that the server must be upgraded.
func TestInspectionOldServer(t *testing.T) {
	ts := newTunnelServer(t)
	proxy := inspectingProxy(t, ts.Listener.Addr().String())
	pinned, err := certs.ClientConfig(certs.ClientOptions{Fingerprint: certs.Fingerprint(ts.Certificate())})
	if err != nil {
		t.Fatal(err)
	}
	for _, policy := range []client.Inspection{client.InspectionE2E, client.InspectionRefuse} {
		_, err = client.Connect(t.Context(), client.Config{URL: "wss://" + proxy, Username: "alice", Password: "secret",
			TLS: pinned, Inspection: policy, DialTimeout: 5 * time.Second})
		if err == nil {
			t.Fatalf("%v: connected to an old server through an inspecting proxy", policy)
		}
		line := err.Error()
		for _, want := range []string{`"CN=Test Inspection CA"`, "replaced on the way", "burrow.v1", "burrow-inner.1", "upgrade it"} {
			if !strings.Contains(line, want) {
				t.Errorf("%v: error %q does not contain %q", policy, line, want)
			}
		}
		if strings.Contains(line, "\n") {
			t.Errorf("%v: error %q is not one line", policy, line)
		}
	}
	if n := ts.sessions.Load(); n != 0 {
		t.Errorf("the old server got %d sessions", n)
	}
}

// TestInspectionAllowNeedsSystemTrust: --inspection allow trusts a proxy
// only if the system's roots vouch for it; the test proxy's CA is in no
// system store, so the client refuses with the pin's complaint, naming the
// proxy's issuer.
func TestInspectionAllowNeedsSystemTrust(t *testing.T) {
	ts := newTunnelServer(t)
	proxy := inspectingProxy(t, ts.Listener.Addr().String())
	pinned, err := certs.ClientConfig(certs.ClientOptions{Fingerprint: certs.Fingerprint(ts.Certificate())})
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.Connect(t.Context(), client.Config{URL: "wss://" + proxy, Username: "alice", Password: "secret",
		TLS: pinned, Inspection: client.InspectionAllow, DialTimeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), `"CN=Test Inspection CA"`) {
		t.Fatalf("allow without system trust in the proxy = %v, want the pin's refusal naming the issuer", err)
	}
	if n := ts.sessions.Load(); n != 0 {
		t.Errorf("the server got %d sessions", n)
	}
}

func TestParseInspection(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want client.Inspection
	}{{"", client.InspectionE2E}, {"e2e", client.InspectionE2E}, {"refuse", client.InspectionRefuse}, {"allow", client.InspectionAllow}} {
		got, err := client.ParseInspection(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseInspection(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	if _, err := client.ParseInspection("off"); err == nil || !strings.Contains(err.Error(), "e2e") {
		t.Errorf("ParseInspection(off) = %v, want an error naming the choices", err)
	}
}

// TestBindingOldServer: a client that trusts the server through a CA asks
// for channel binding first; a server that predates it answers 401 to the
// request without credentials, and the client connects again as before.
func TestBindingOldServer(t *testing.T) {
	ts := newTunnelServer(t)
	sess, err := client.Connect(t.Context(), client.Config{URL: "wss" + strings.TrimPrefix(ts.URL, "https"),
		Username: "alice", Password: "secret", TLS: ts.Client().Transport.(*http.Transport).TLSClientConfig,
		DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("a new client of an old server: %v", err)
	}
	sess.Close()
	// The server counts the session after its upgrade, which the client
	// may have seen through before.
	for deadline := time.Now().Add(5 * time.Second); ts.sessions.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := ts.sessions.Load(); n != 1 {
		t.Errorf("the old server got %d sessions, want 1", n)
	}
}

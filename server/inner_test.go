package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/burrowtun/burrow/certs"
	"github.com/burrowtun/burrow/inner"
	"github.com/burrowtun/burrow/mux"
	"github.com/burrowtun/burrow/server"
)

// innerPair makes the server's end-to-end certificate and a client
// configuration that pins it.
func innerPair(t *testing.T) (srv, client *tls.Config) {
	t.Helper()
	certPEM, keyPEM, err := certs.GenerateSelfSigned([]string{"localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	fp, err := certs.FingerprintPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	client, err = certs.ClientConfig(certs.ClientOptions{Fingerprint: fp})
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}}, client
}

// dialInner asks f's server for an end-to-end session, without
// credentials on the request, and logs in inside it.
func (f *fixture) dialInner(t *testing.T, pinned *tls.Config, user, password string) (*mux.Session, error) {
	t.Helper()
	h := http.Header{}
	h.Set(inner.Header, inner.Version)
	conn, answer, err := mux.DialWebSocket(t.Context(), f.url+"/", &mux.DialOptions{HTTPClient: f.http.Client(), Header: h})
	if err != nil {
		return nil, err
	}
	if answer.Get(inner.Header) != inner.Version {
		conn.Close()
		t.Fatalf("the server answered the upgrade without %s: %v", inner.Header, answer)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	ic, err := inner.Client(ctx, conn, pinned, inner.Login{User: user, Password: password})
	if err != nil {
		conn.Close()
		return nil, err
	}
	return mux.Client(ic, nil)
}

// TestInnerSession: a client asking for an end-to-end session logs in
// inside it and forwards as over any session; a wrong password gets the
// denied verdict and counts as a failed login, so that after the limit
// the upgrade itself is refused with 429, before any inner handshake.
func TestInnerSession(t *testing.T) {
	srvTLS, pinned := innerPair(t)
	f := newFixture(t, server.Config{Inner: srvTLS, LoginFailures: 3}, ".*")
	sess, err := f.dialInner(t, pinned, "alice", "alice-secret")
	if err != nil {
		t.Fatalf("end-to-end session: %v", err)
	}
	target := echoTarget(t)
	st, err := mux.Open(sess, mux.Header{Kind: mux.KindTCP, Target: target}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("end to end, inside the proxy's connection")
	st.Write(want)
	got := make([]byte, len(want))
	st.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(st, got); err != nil || string(got) != string(want) {
		t.Fatalf("echo = %q, %v", got, err)
	}
	st.Close()
	sess.Close()
	if !strings.Contains(f.logs.String(), "end-to-end session") {
		t.Errorf("the server did not log the end-to-end session:\n%s", f.logs)
	}

	for range 3 {
		_, err := f.dialInner(t, pinned, "alice", "wrong")
		var refused *inner.RefusedError
		if !errors.As(err, &refused) || refused.Verdict.Status != inner.StatusDenied {
			t.Fatalf("wrong password = %v, want the denied verdict", err)
		}
	}
	_, err = f.dialInner(t, pinned, "alice", "alice-secret")
	var he *mux.HandshakeError
	if !errors.As(err, &he) || he.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("after the limit of failures = %v, want the upgrade refused with 429", err)
	}
}

// TestInnerNotOffered: a server without an end-to-end certificate
// answers a request for one with 501, before upgrading.
func TestInnerNotOffered(t *testing.T) {
	_, pinned := innerPair(t)
	f := newFixture(t, server.Config{}, ".*")
	_, err := f.dialInner(t, pinned, "alice", "alice-secret")
	var he *mux.HandshakeError
	if !errors.As(err, &he) || he.StatusCode != http.StatusNotImplemented {
		t.Fatalf("dial = %v, want 501", err)
	}
}

// TestInnerLostUpgrade: a request for an end-to-end session carries no
// credentials; when a proxy removed its upgrade it is told so all the
// same, naming the proxy.
func TestInnerLostUpgrade(t *testing.T) {
	srvTLS, pinned := innerPair(t)
	f := newFixtureBehind(t, server.Config{Inner: srvTLS}, stripUpgrade, ".*")
	_, err := f.dialInner(t, pinned, "alice", "alice-secret")
	var he *mux.HandshakeError
	if !errors.As(err, &he) || he.StatusCode != http.StatusUpgradeRequired || !he.UpgradeRemoved || he.Via == "" {
		t.Fatalf("dial through a proxy that removes upgrades = %v (%+v), want 426 naming the proxy", err, he)
	}
}

// dialBound asks f's server for channel binding, as a client that trusts
// it through a CA does, and returns the connection, the answer's headers
// and the client's TLS state.
func (f *fixture) dialBound(t *testing.T) (net.Conn, http.Header, tls.ConnectionState) {
	t.Helper()
	tr := f.http.Client().Transport.(*http.Transport).Clone()
	var tc *tls.Conn
	tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		cfg := tr.TLSClientConfig.Clone()
		cfg.ServerName = "example.com"
		cfg.NextProtos = []string{"http/1.1"}
		c, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, network, addr)
		if err == nil {
			tc = c.(*tls.Conn)
		}
		return c, err
	}
	h := http.Header{}
	h.Set(inner.BindingHeader, inner.BindingMethod)
	conn, answer, err := mux.DialWebSocket(t.Context(), f.url+"/", &mux.DialOptions{HTTPClient: &http.Client{Transport: tr}, Header: h})
	if err != nil {
		t.Fatalf("upgrade asking for channel binding: %v", err)
	}
	return conn, answer, tc.ConnectionState()
}

// TestBoundSession: the server answers a request for channel binding with
// its signature over the TLS session, which verifies on the client's end;
// the client's login then goes on the WebSocket itself, and the session
// runs there.
func TestBoundSession(t *testing.T) {
	own := &tls.Config{}
	f := newFixture(t, server.Config{Inner: own}, ".*")
	own.Certificates = f.http.TLS.Certificates
	conn, answer, cs := f.dialBound(t)
	defer conn.Close()
	roots := x509.NewCertPool()
	roots.AddCert(f.http.Certificate())
	if err := inner.VerifyBinding(answer, cs, "example.com", roots); err != nil {
		t.Fatalf("the server's binding: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := inner.LogIn(ctx, conn, inner.Login{User: "alice", Password: "alice-secret"}); err != nil {
		t.Fatalf("login after the binding: %v", err)
	}
	sess, err := mux.Client(conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	st, err := mux.Open(sess, mux.Header{Kind: mux.KindTCP, Target: echoTarget(t)}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.Write([]byte("bound"))
	got := make([]byte, 5)
	st.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(st, got); err != nil || string(got) != "bound" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	if strings.Contains(f.logs.String(), "end-to-end session") {
		t.Error("a bound session was logged as end to end")
	}
}

// TestBoundSilentClient: a client that upgrades asking for channel
// binding and then sends nothing is dropped after the header timeout.
func TestBoundSilentClient(t *testing.T) {
	own := &tls.Config{}
	f := newFixture(t, server.Config{Inner: own, HeaderTimeout: 200 * time.Millisecond}, ".*")
	own.Certificates = f.http.TLS.Certificates
	conn, _, _ := f.dialBound(t)
	defer conn.Close()
	mine := time.Now().Add(10 * time.Second) // the test's own bound, far beyond the server's
	conn.SetReadDeadline(mine)
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("the server sent something to a client that did not log in")
	}
	if !time.Now().Before(mine) {
		t.Fatal("the server kept the connection of a client that sent nothing")
	}
	if f.srv.Sessions() != 0 {
		t.Errorf("%d sessions after a silent client", f.srv.Sessions())
	}
}

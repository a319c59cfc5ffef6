package inner

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/burrowtun/burrow/certs"
)

// tlsSession handshakes over a loopback pair with cert and returns both
// ends' connection states, the client's verified for "tunnel.example"
// against roots.
func tlsSession(t *testing.T, cert tls.Certificate, roots *x509.CertPool) (client, server tls.ConnectionState) {
	t.Helper()
	a, b := tcpPair(t)
	t.Cleanup(func() { a.Close(); b.Close() })
	sc := tls.Server(b, &tls.Config{Certificates: []tls.Certificate{cert}})
	done := make(chan error, 1)
	go func() { done <- sc.Handshake() }()
	cc := tls.Client(a, &tls.Config{ServerName: "tunnel.example", RootCAs: roots})
	if err := cc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return cc.ConnectionState(), sc.ConnectionState()
}

func serverCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	certPEM, keyPEM, err := certs.GenerateSelfSigned([]string{"tunnel.example"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	return pair, roots
}

// TestBinding: the server's binding of its TLS session verifies on the
// client's end of the same session, and not on another session's, as the
// client of an inspecting proxy has; a tampered signature, missing headers
// and a certificate the roots do not vouch for are refused.
func TestBinding(t *testing.T) {
	cert, roots := serverCert(t)
	client, server := tlsSession(t, cert, roots)
	ekm, err := ExporterValue(server)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	if err := Bind(h, &cert, ekm); err != nil {
		t.Fatal(err)
	}
	if err := VerifyBinding(h, client, "tunnel.example", roots); err != nil {
		t.Fatalf("the binding of the same session: %v", err)
	}

	other, _ := tlsSession(t, cert, roots) // the proxy's session with the client
	if err := VerifyBinding(h, other, "tunnel.example", roots); !errors.Is(err, ErrBindingMismatch) {
		t.Fatalf("the binding of another session = %v, want ErrBindingMismatch", err)
	}

	tampered := h.Clone()
	sig := []byte(tampered.Get(BindingHeader))
	sig[len(sig)/2] ^= 1
	tampered.Set(BindingHeader, string(sig))
	if err := VerifyBinding(tampered, client, "tunnel.example", roots); err == nil {
		t.Fatal("a tampered signature verified")
	}

	if err := VerifyBinding(http.Header{}, client, "tunnel.example", roots); !errors.Is(err, ErrNoBinding) {
		t.Fatalf("no headers = %v, want ErrNoBinding", err)
	}

	if err := VerifyBinding(h, client, "other.example", roots); err == nil {
		t.Fatal("a chain for another name verified")
	}

	_, strangers := serverCert(t)
	if err := VerifyBinding(h, client, "tunnel.example", strangers); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a chain the roots do not vouch for = %v, want it refused", err)
	}
}

func FuzzParseBinding(f *testing.F) {
	certPEM, keyPEM, err := certs.GenerateSelfSigned([]string{"tunnel.example"}, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		f.Fatal(err)
	}
	h := http.Header{}
	Bind(h, &cert, make([]byte, 32))
	f.Add(h.Get(BindingHeader), h.Get(CertificateHeader))
	f.Add("AAAA", "AAAA,BBBB")
	f.Fuzz(func(t *testing.T, sig, chain string) {
		h := http.Header{}
		h.Set(BindingHeader, sig)
		h.Set(CertificateHeader, chain)
		certs, s, err := ParseBinding(h)
		if err != nil {
			return
		}
		if len(certs) == 0 || len(certs) > maxChain || len(s) > maxSignature {
			t.Fatalf("parsed %d certificates and a %d-byte signature, beyond the limits", len(certs), len(s))
		}
	})
}

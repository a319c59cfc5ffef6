package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

// reSigned returns what a TLS-inspecting proxy presents for a server: a
// leaf for the server's names with a key of its own, issued by its CA.
func reSigned(t *testing.T, caName string) tls.Certificate {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: caName},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{leafDER, caDER}, PrivateKey: leafKey}
}

// TestPinnedThroughInspection: a pinned client that meets a certificate
// re-signed by another CA says so, naming the CA, instead of sending the
// user to check the server's fingerprint; a self-signed impostor keeps the
// plain mismatch.
func TestPinnedThroughInspection(t *testing.T) {
	t.Parallel()
	server, _ := validPair(t, "127.0.0.1")
	pin := mustFingerprint(t, server)
	proxy := reSigned(t, "Corp Inspection CA")
	addr := serveTLS(t, ServerConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &proxy, nil }))
	cfg, err := ClientConfig(ClientOptions{Fingerprint: pin})
	if err != nil {
		t.Fatal(err)
	}
	_, err = dial(addr, cfg)
	var mismatch *FingerprintMismatchError
	if !errors.As(err, &mismatch) || mismatch.Issuer != "CN=Corp Inspection CA" || mismatch.Want != pin {
		t.Fatalf("handshake through the re-signing party = %v, want a mismatch naming its CA", err)
	}
	msg := Explain(err).Error()
	for _, want := range []string{`"CN=Corp Inspection CA"`, "replaced on the way", pin, mismatch.Got, "--ca"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not mention %q", msg, want)
		}
	}
	if strings.Contains(msg, "burrow cert fingerprint") {
		t.Errorf("message %q sends the user to check the server's fingerprint", msg)
	}

	other, otherKey := validPair(t, "127.0.0.1")
	pair, _ := tls.X509KeyPair(other, otherKey)
	addr = serveTLS(t, ServerConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &pair, nil }))
	_, err = dial(addr, cfg)
	if !errors.As(err, &mismatch) || mismatch.Issuer != "" || !strings.Contains(err.Error(), "burrow cert fingerprint") {
		t.Fatalf("handshake with another self-signed key = %v, want the plain mismatch", err)
	}
}

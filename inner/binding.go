package inner

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Channel binding (RFC 9266, tls-exporter) tells a client that pins nothing, and trusts the server through
// a CA, whether its TLS session is the server's: a TLS-inspecting proxy whose CA the client trusts is
// otherwise indistinguishable from the server. The client sends its upgrade without credentials and with
// BindingHeader: BindingMethod; the server answers the upgrade (101) with BindingHeader carrying a
// signature, by its certificate's key, over its own TLS session's exporter value, and CertificateHeader
// carrying the certificate chain. A proxy in the middle has two TLS sessions with two exporter values, so
// the signature does not match the client's. After a matching binding the client sends its login (the
// message of WriteLogin) on the WebSocket itself, and the server its verdict; after a mismatch it starts
// the inner handshake there instead (Handshake). The server tells the two apart by the first byte: a
// login starts with its version (1), a TLS handshake record with 22.
const (
	BindingHeader     = "Burrow-Binding"
	CertificateHeader = "Burrow-Certificate"
	BindingMethod     = "tls-exporter"
	// exporterLabel is RFC 9266's label for the tls-exporter channel binding.
	exporterLabel = "EXPORTER-Channel-Binding"
	// bindingContext is signed before the exporter value, so that the signature means nothing elsewhere.
	bindingContext = "burrow channel binding 1\x00"
)

// Limits of what a client parses from the answer, checked before decoding.
const (
	maxChain       = 4
	maxCertificate = 8 << 10 // bytes of one DER certificate
	maxSignature   = 1 << 10
)

// ErrBindingMismatch is what VerifyBinding returns when the server's signature does not cover the
// client's TLS session: another party terminated it.
var ErrBindingMismatch = errors.New("the server's channel binding does not match this TLS session")

// ErrNoBinding is what VerifyBinding returns for an answer without the binding headers: a party on the
// way removed them, or the server could not bind (it does not terminate TLS itself).
var ErrNoBinding = errors.New("the server's answer carries no channel binding")

// ExporterValue is the tls-exporter channel binding of cs: 32 bytes.
func ExporterValue(cs tls.ConnectionState) ([]byte, error) {
	return cs.ExportKeyingMaterial(exporterLabel, nil, 32)
}

// Bind sets the binding headers on h: cert's chain, and its key's signature over ekm, the exporter value
// of the TLS session the answer goes out on.
func Bind(h http.Header, cert *tls.Certificate, ekm []byte) error {
	signer, ok := cert.PrivateKey.(crypto.Signer)
	if !ok || len(cert.Certificate) == 0 {
		return errors.New("channel binding: the certificate has no key that signs")
	}
	digest := sha256.Sum256(append([]byte(bindingContext), ekm...))
	var opts crypto.SignerOpts = crypto.SHA256
	msg := digest[:]
	switch signer.Public().(type) {
	case *rsa.PublicKey:
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
	case ed25519.PublicKey:
		opts, msg = crypto.Hash(0), append([]byte(bindingContext), ekm...)
	}
	sig, err := signer.Sign(rand.Reader, msg, opts)
	if err != nil {
		return fmt.Errorf("channel binding: %w", err)
	}
	chain := make([]string, 0, min(len(cert.Certificate), maxChain))
	for _, der := range cert.Certificate[:min(len(cert.Certificate), maxChain)] {
		chain = append(chain, base64.RawURLEncoding.EncodeToString(der))
	}
	h.Set(BindingHeader, base64.RawURLEncoding.EncodeToString(sig))
	h.Set(CertificateHeader, strings.Join(chain, ","))
	return nil
}

// ParseBinding reads the binding headers of an answer: the certificate chain, leaf first, and the
// signature. It refuses, before decoding, more than maxChain certificates or longer values than the
// limits.
func ParseBinding(h http.Header) ([]*x509.Certificate, []byte, error) {
	sigText, chainText := h.Get(BindingHeader), h.Get(CertificateHeader)
	if sigText == "" || chainText == "" {
		return nil, nil, ErrNoBinding
	}
	if len(sigText) > base64.RawURLEncoding.EncodedLen(maxSignature) {
		return nil, nil, fmt.Errorf("%w: signature too long", ErrMalformed)
	}
	sig, err := base64.RawURLEncoding.DecodeString(sigText)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: signature: %v", ErrMalformed, err)
	}
	parts := strings.SplitN(chainText, ",", maxChain+1)
	if len(parts) > maxChain {
		return nil, nil, fmt.Errorf("%w: more than %d certificates", ErrMalformed, maxChain)
	}
	chain := make([]*x509.Certificate, 0, len(parts))
	for _, p := range parts {
		if len(p) > base64.RawURLEncoding.EncodedLen(maxCertificate) {
			return nil, nil, fmt.Errorf("%w: certificate too long", ErrMalformed)
		}
		der, err := base64.RawURLEncoding.DecodeString(p)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: certificate: %v", ErrMalformed, err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: certificate: %v", ErrMalformed, err)
		}
		chain = append(chain, c)
	}
	return chain, sig, nil
}

// VerifyBinding checks the binding headers of an answer received over the TLS session cs: the chain must
// verify for name (the server's name as the client knows it: cs.ServerName holds only what SNI carried,
// nothing for an IP address) against roots (nil: the system's), and its leaf's key must have signed cs's
// exporter value. It returns ErrNoBinding without the headers, ErrBindingMismatch for a signature over
// another session, and an error naming the problem for a chain the roots do not vouch for.
func VerifyBinding(h http.Header, cs tls.ConnectionState, name string, roots *x509.CertPool) error {
	chain, sig, err := ParseBinding(h)
	if err != nil {
		return err
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter}); err != nil {
		return fmt.Errorf("channel binding: the server's certificate: %w", err)
	}
	ekm, err := ExporterValue(cs)
	if err != nil {
		return fmt.Errorf("channel binding: %w", err)
	}
	digest := sha256.Sum256(append([]byte(bindingContext), ekm...))
	ok := false
	switch pub := chain[0].PublicKey.(type) {
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(pub, digest[:], sig)
	case *rsa.PublicKey:
		ok = rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
	case ed25519.PublicKey:
		ok = ed25519.Verify(pub, append([]byte(bindingContext), ekm...), sig)
	default:
		return fmt.Errorf("channel binding: the server's key is of an unknown type %T", pub)
	}
	if !ok {
		return ErrBindingMismatch
	}
	return nil
}

package certs

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
)

// nextProtos pins ALPN to HTTP/1.1: the WebSocket upgrade does not work over HTTP/2.
func nextProtos() []string { return []string{"http/1.1"} }

// ServerConfig returns a server *tls.Config (TLS 1.2 or later, ALPN "http/1.1") that takes its certificate
// from getCert on every handshake, so certificates can be swapped at run time (see Reloadable).
func ServerConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     nextProtos(),
		GetCertificate: getCert,
	}
}

// ClientOptions says how a client verifies the server. The zero value verifies against the system roots.
// CAFile, Fingerprint and Insecure are alternatives: at most one may be set.
type ClientOptions struct {
	// CAFile is a PEM bundle of certificates to trust instead of the system roots.
	CAFile string
	// Fingerprint pins the server: the expected Fingerprint of its leaf certificate, in any form
	// ParseFingerprint accepts. When set it replaces chain and hostname verification.
	Fingerprint string
	// Insecure skips all verification. The CLI prints a loud warning.
	Insecure bool
	// ServerName is the SNI name and the name verified; empty means the caller's dialer derives it from the
	// URL host.
	ServerName string
	// CertFile and KeyFile are the client's own certificate, for servers that require one (mTLS).
	CertFile, KeyFile string
	// Known, when set and none of CAFile, Fingerprint and Insecure is, accepts a server whose certificate no
	// system root vouches for if the known servers file records its key for Server (see KnownServers).
	Known *KnownServers
	// Server is the host:port the client dials, the server's name in Known.
	Server string
}

// FingerprintMismatchError is returned by a pinned handshake when the server's key is not the pinned one.
// Got and Want are lowercase hex fingerprints. Issuer is the presented certificate's issuer when another
// party issued it (it is not self-issued): what a TLS-inspecting proxy, re-signing the server's certificate
// with its own CA, presents.
type FingerprintMismatchError struct {
	Got, Want string
	Issuer    string
}

func (e *FingerprintMismatchError) Error() string {
	if e.Issuer != "" {
		return fmt.Sprintf("the server's certificate was replaced on the way: %q issued the one received "+
			"(key fingerprint %s, not the pinned %s), as a TLS-inspecting proxy does; ask for the server to be "+
			"exempted from inspection, or pass --ca with that CA to let the proxy read the tunnel", e.Issuer, e.Got, e.Want)
	}
	return fmt.Sprintf("server certificate fingerprint %s does not match --fingerprint %s; "+
		"get the server's fingerprint with 'burrow cert fingerprint' on the server", e.Got, e.Want)
}

// replacedBy returns the issuer of a leaf that another party issued, and "" for a self-issued one.
func replacedBy(leaf *x509.Certificate) string {
	if bytes.Equal(leaf.RawIssuer, leaf.RawSubject) {
		return ""
	}
	return leaf.Issuer.String()
}

// ClientConfig builds a client *tls.Config (TLS 1.2 or later, ALPN "http/1.1") from opts. With a
// Fingerprint, certificate verification is replaced by comparing the SHA-256 of the leaf's public key with
// the pin in constant time; a mismatch fails the handshake with a *FingerprintMismatchError. The TLS
// handshake itself proves the server holds the pinned key.
func ClientConfig(opts ClientOptions) (*tls.Config, error) {
	set := 0
	for _, b := range []bool{opts.CAFile != "", opts.Fingerprint != "", opts.Insecure} {
		if b {
			set++
		}
	}
	if set > 1 {
		return nil, errors.New("--ca, --fingerprint and --insecure are alternatives; pass only one")
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: nextProtos(),
		ServerName: opts.ServerName,
	}
	if (opts.CertFile == "") != (opts.KeyFile == "") {
		return nil, errors.New("--tls-cert and --tls-key go together: pass both or neither")
	}
	if opts.CertFile != "" {
		pair, err := LoadKeyPair(opts.CertFile, opts.KeyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	switch {
	case opts.CAFile != "":
		data, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read --ca file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("--ca file %s has no PEM certificates", opts.CAFile)
		}
	case opts.Fingerprint != "":
		want, err := ParseFingerprint(opts.Fingerprint)
		if err != nil {
			return nil, fmt.Errorf("--fingerprint: %w", err)
		}
		cfg.InsecureSkipVerify = true // replaced by the pin below
		// No CA vouches for a pinned server: an empty pool, which only
		// Verify's callers read (crypto/tls does not, InsecureSkipVerify
		// being set), so that they do not ask for what the pin proves.
		cfg.RootCAs = x509.NewCertPool()
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("server sent no certificate")
			}
			got := sha256.Sum256(cs.PeerCertificates[0].RawSubjectPublicKeyInfo)
			if subtle.ConstantTimeCompare(got[:], want) != 1 {
				return &FingerprintMismatchError{Got: hex.EncodeToString(got[:]), Want: hex.EncodeToString(want),
					Issuer: replacedBy(cs.PeerCertificates[0])}
			}
			return nil
		}
	case opts.Insecure:
		cfg.InsecureSkipVerify = true
	case opts.Known != nil:
		cfg.InsecureSkipVerify = true // verified below: by the system roots, or else by the known servers
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if cs.ServerName == "" { // an IP address, which SNI does not carry
				if cs.ServerName = opts.ServerName; cs.ServerName == "" {
					cs.ServerName, _, _ = net.SplitHostPort(opts.Server)
				}
			}
			return verifyOrKnown(cs, nil, opts.Known, opts.Server)
		}
	}
	return cfg, nil
}

// verifyOrKnown verifies a server's chain and name against roots (nil: the system's), as crypto/tls does by
// default; a certificate that no root vouches for passes if known records its key for server.
func verifyOrKnown(cs tls.ConnectionState, roots *x509.CertPool, known *KnownServers, server string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("server sent no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{DNSName: cs.ServerName, Roots: roots, Intermediates: inter})
	var unknown x509.UnknownAuthorityError
	if err == nil || !errors.As(err, &unknown) {
		if err != nil {
			return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
		}
		return nil
	}
	return known.Check(server, Fingerprint(leaf))
}

// Verify checks cs, the state of a client handshake made without verification, as a handshake with cfg
// (from ClientConfig) would have: the chain and the name cfg.ServerName (cs.ServerName if cfg names none)
// against cfg.RootCAs (nil: the system's) unless cfg.InsecureSkipVerify is set, then cfg.VerifyConnection. A client that must look at the
// server's certificate before deciding how to go on (one that may be behind a TLS-inspecting proxy)
// handshakes without verification and calls Verify.
func Verify(cfg *tls.Config, cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("server sent no certificate")
	}
	// The name to verify is the one the client meant; cs names only what
	// went in SNI, which is nothing for an IP address.
	if cfg.ServerName != "" {
		cs.ServerName = cfg.ServerName
	}
	if !cfg.InsecureSkipVerify {
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		opts := x509.VerifyOptions{DNSName: cs.ServerName, Roots: cfg.RootCAs, Intermediates: inter}
		if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
			return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
		}
	}
	if cfg.VerifyPeerCertificate != nil {
		raw := make([][]byte, len(cs.PeerCertificates))
		for i, c := range cs.PeerCertificates {
			raw[i] = c.Raw
		}
		if err := cfg.VerifyPeerCertificate(raw, cs.VerifiedChains); err != nil {
			return err
		}
	}
	if cfg.VerifyConnection != nil {
		return cfg.VerifyConnection(cs)
	}
	return nil
}

// VouchedByCA reports whether a CA among cfg's roots (the system's when cfg names none) vouches for cs's
// chain and name: whether the client trusts the server through a CA, as it would trust a TLS-inspecting
// proxy whose CA it holds, rather than by its key. False for a pinned cfg (ClientConfig with a
// Fingerprint) and for one that verifies nothing.
func VouchedByCA(cfg *tls.Config, cs tls.ConnectionState) bool {
	if cfg.InsecureSkipVerify && cfg.VerifyConnection == nil && cfg.VerifyPeerCertificate == nil {
		return false
	}
	return Verify(&tls.Config{RootCAs: cfg.RootCAs}, cs) == nil
}

// VerifySystem reports whether the system's roots vouch for cs's chain and name: what a client that
// accepts a TLS-inspecting proxy as a trusted party asks of the proxy's certificate.
func VerifySystem(cs tls.ConnectionState) error {
	return Verify(&tls.Config{}, cs)
}

package certs

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// RequireClientCerts makes cfg demand a client certificate signed by one
// of the CAs in the PEM file caFile (mutual TLS). Clients without one, or
// with one from another CA, fail the handshake.
func RequireClientCerts(cfg *tls.Config, caFile string) error {
	data, err := os.ReadFile(caFile)
	if err != nil {
		return fmt.Errorf("read --tls-client-ca file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return fmt.Errorf("--tls-client-ca file %s has no PEM certificates", caFile)
	}
	cfg.ClientCAs = pool
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	return nil
}

// SelfSignedValidity is how long a certificate made by LoadOrCreateSelfSigned lasts.
const SelfSignedValidity = 825 * 24 * time.Hour

// LoadOrCreateSelfSigned returns the paths of dir/cert.pem and dir/key.pem,
// generating a self-signed pair for hosts first when they do not exist,
// so that a server restarted with the same state directory keeps its
// fingerprint. created reports whether a new pair was made.
func LoadOrCreateSelfSigned(dir string, hosts []string) (certPath, keyPath string, created bool, err error) {
	certPath, keyPath = filepath.Join(dir, CertFileName), filepath.Join(dir, KeyFileName)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	if certErr == nil && keyErr == nil {
		return certPath, keyPath, false, nil
	}
	certPEM, keyPEM, err := GenerateSelfSigned(hosts, SelfSignedValidity)
	if err != nil {
		return "", "", false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", false, fmt.Errorf("state directory: %w", err)
	}
	certPath, keyPath, err = WriteKeyPair(dir, certPEM, keyPEM, false)
	return certPath, keyPath, err == nil, err
}

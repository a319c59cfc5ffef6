package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// ACMEOptions configures automatic certificates.
type ACMEOptions struct {
	// Domains the server may get certificates for; others are refused.
	Domains []string
	// CacheDir keeps account keys and certificates across restarts.
	CacheDir string
	// Email is given to the CA for expiry notices; may be empty.
	Email string
	// DirectoryURL is the CA's ACME directory; empty means Let's Encrypt.
	DirectoryURL string
	// DirectoryRoots, when set, are the roots that verify the directory's
	// own HTTPS (a private or test CA such as pebble).
	DirectoryRoots *x509.CertPool
}

// NewACME returns an autocert manager that obtains and renews
// certificates for opts.Domains with TLS-ALPN-01 challenges answered on
// the server's own TLS port.
func NewACME(opts ACMEOptions) (*autocert.Manager, error) {
	if len(opts.Domains) == 0 {
		return nil, errors.New("--tls-domain needs at least one domain")
	}
	if opts.CacheDir == "" {
		return nil, errors.New("automatic certificates need a state directory (--state-dir) to keep them")
	}
	m := &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		HostPolicy: autocert.HostWhitelist(opts.Domains...),
		Cache:      autocert.DirCache(opts.CacheDir),
		Email:      opts.Email,
	}
	if opts.DirectoryURL != "" || opts.DirectoryRoots != nil {
		c := &acme.Client{DirectoryURL: opts.DirectoryURL}
		if opts.DirectoryRoots != nil {
			c.HTTPClient = &http.Client{Transport: &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: opts.DirectoryRoots, MinVersion: tls.VersionTLS12},
			}}
		}
		m.Client = c
	}
	return m, nil
}

// ACMEServerConfig is ServerConfig for a server whose certificates come
// from m: it also answers the CA's TLS-ALPN-01 challenges.
func ACMEServerConfig(m *autocert.Manager) *tls.Config {
	cfg := ServerConfig(m.GetCertificate)
	cfg.NextProtos = append(cfg.NextProtos, acme.ALPNProto)
	return cfg
}

package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/burrowtun/burrow/certs"
)

// serverTLS is where the server's certificate comes from: files (given,
// or generated once into the state directory), or ACME.
type serverTLS struct {
	config *tls.Config
	// plain serves HTTP (--tls off): config is then the certificate of
	// end-to-end sessions only (server.Config.Inner).
	plain             bool
	files             *certs.Reloadable // nil with ACME
	certFile, keyFile string
}

func (t *serverTLS) fingerprint() string {
	if t.files == nil {
		return "(acme)"
	}
	return certs.Fingerprint(t.files.Leaf())
}

// newTLS is the TLS of cfg.TLS: a certificate source when on, a check
// that plain HTTP is allowed when off.
func newTLS(cfg *Config, trusted []netip.Prefix, log *slog.Logger) (*serverTLS, error) {
	switch cfg.TLS {
	case "on":
		return newServerTLS(cfg, log)
	case "off":
		if err := plainAllowed(cfg.Listen, trusted); err != nil {
			return nil, err
		}
		log.Warn("--tls off: serving plain HTTP; a TLS-terminating proxy must be in front")
		// The certificate still serves end-to-end sessions, those of
		// clients whose TLS connection ends at an inspecting proxy.
		own := *cfg
		own.Domains, own.ClientCA = nil, ""
		if own.CertFile == "" && own.KeyFile == "" {
			own.SelfSigned = true
		}
		t, err := newServerTLS(&own, log)
		if err != nil {
			return nil, err
		}
		t.plain = true
		return t, nil
	}
	return nil, fmt.Errorf("--tls %q: want on or off", cfg.TLS)
}

// serving is the TLS configuration of the listener: nil with --tls off.
func (t *serverTLS) serving() *tls.Config {
	if t.plain {
		return nil
	}
	return t.config
}

// plainAllowed permits --tls off only where the traffic cannot leave the
// machine unencrypted by accident: a loopback listener, or an operator
// who named the proxy in front with --trusted-proxy.
func plainAllowed(listen string, trusted []netip.Prefix) error {
	if len(trusted) > 0 {
		return nil
	}
	host, _, err := net.SplitHostPort(listen)
	if err == nil {
		if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() {
			return nil
		}
		if host == "localhost" {
			return nil
		}
	}
	return fmt.Errorf("--tls off serves plain HTTP: allowed only with a loopback --listen (e.g. 127.0.0.1:8080) or with --trusted-proxy naming the TLS proxy in front, not with --listen %s", listen)
}

func newServerTLS(cfg *Config, log *slog.Logger) (*serverTLS, error) {
	t := &serverTLS{certFile: cfg.CertFile, keyFile: cfg.KeyFile}
	sources := 0
	for _, set := range []bool{t.certFile != "" || t.keyFile != "", cfg.SelfSigned, len(cfg.Domains) > 0} {
		if set {
			sources++
		}
	}
	var err error
	switch {
	case sources == 0:
		return nil, errors.New("the server needs a certificate: --tls-cert and --tls-key, --tls-self-signed, or --tls-domain NAME")
	case sources > 1:
		return nil, errors.New("--tls-cert/--tls-key, --tls-self-signed and --tls-domain are alternatives; pass one")
	case len(cfg.Domains) > 0:
		if t.config, err = acmeTLS(cfg, log); err != nil {
			return nil, err
		}
	default:
		if err := t.loadFiles(cfg, log); err != nil {
			return nil, err
		}
	}
	if ca := cfg.ClientCA; ca != "" {
		if err := certs.RequireClientCerts(t.config, ca); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// acmeTLS gets and renews the certificate of cfg.Domains with ACME.
func acmeTLS(cfg *Config, log *slog.Logger) (*tls.Config, error) {
	opts := certs.ACMEOptions{
		Domains:      cfg.Domains,
		CacheDir:     filepath.Join(cfg.StateDir, "acme"),
		Email:        cfg.ACMEEmail,
		DirectoryURL: cfg.ACMEDirectory,
	}
	if f := cfg.ACMECA; f != "" {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--acme-ca: %w", err)
		}
		opts.DirectoryRoots = x509.NewCertPool()
		if !opts.DirectoryRoots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--acme-ca file %s has no PEM certificates", f)
		}
	}
	m, err := certs.NewACME(opts)
	if err != nil {
		return nil, err
	}
	log.Info("certificates from ACME", "domains", opts.Domains, "cache", opts.CacheDir)
	return certs.ACMEServerConfig(m), nil
}

// loadFiles loads the certificate files, generating the self-signed pair
// first when asked to.
func (t *serverTLS) loadFiles(cfg *Config, log *slog.Logger) error {
	if cfg.SelfSigned {
		host, _ := os.Hostname()
		hosts := []string{"localhost", "127.0.0.1", "::1"}
		if host != "" {
			hosts = append([]string{host}, hosts...)
		}
		var created bool
		var err error
		t.certFile, t.keyFile, created, err = certs.LoadOrCreateSelfSigned(cfg.StateDir, hosts)
		if err != nil {
			return err
		}
		if created {
			log.Info("generated a self-signed certificate", "dir", cfg.StateDir, "hosts", hosts)
		}
	} else if t.certFile == "" || t.keyFile == "" {
		return errors.New("--tls-cert and --tls-key go together; make a pair with 'burrow cert self-signed --host NAME --out DIR'")
	}
	files, err := certs.NewReloadable(t.certFile, t.keyFile)
	if err != nil {
		return err
	}
	t.files = files
	t.config = certs.ServerConfig(files.GetCertificate)
	return nil
}

// fileStamp identifies the current contents of files by size and mtime.
func fileStamp(paths ...string) string {
	var s string
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			s += fmt.Sprintf("%s:%d:%d;", p, fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return s
}

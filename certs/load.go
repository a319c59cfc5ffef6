package certs

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync/atomic"
)

// LoadKeyPair loads a PEM certificate chain (leaf first) and its private key. Errors name the file and the
// problem: a missing or unreadable file, a file without the expected PEM block, or a key that does not belong
// to the certificate. The returned certificate has Leaf set.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := readPEM("certificate", certFile, "CERTIFICATE")
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := readPEM("key", keyFile, "PRIVATE KEY")
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate file %s and key file %s: %w", certFile, keyFile, err)
	}
	if cert.Leaf == nil { // nil only under GODEBUG=x509keypairleaf=0
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return tls.Certificate{}, fmt.Errorf("certificate file %s: %w", certFile, err)
		}
	}
	return cert, nil
}

// readPEM reads a file and checks that it holds an unencrypted PEM block whose type ends with typeSuffix.
func readPEM(kind, path, typeSuffix string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is already in our message
		}
		return nil, fmt.Errorf("read %s file %s: %w", kind, path, err)
	}
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return nil, fmt.Errorf("%s file %s has no PEM %s block", kind, path, typeSuffix)
		}
		if !strings.HasSuffix(b.Type, typeSuffix) {
			continue
		}
		if b.Type == "ENCRYPTED PRIVATE KEY" || b.Headers["Proc-Type"] == "4,ENCRYPTED" {
			return nil, fmt.Errorf("%s file %s is encrypted; burrow needs an unencrypted key", kind, path)
		}
		return data, nil
	}
}

// A Reloadable serves a certificate/key pair loaded from files and replaces it atomically on Reload, so a
// server can pick up a renewed certificate without restarting. It is safe for concurrent use.
type Reloadable struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
}

// NewReloadable loads certFile and keyFile with LoadKeyPair.
func NewReloadable(certFile, keyFile string) (*Reloadable, error) {
	r := &Reloadable{certFile: certFile, keyFile: keyFile}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload loads the files again and, if they hold a valid pair, serves it to new handshakes. On error the
// previous pair stays in use.
func (r *Reloadable) Reload() error {
	cert, err := LoadKeyPair(r.certFile, r.keyFile)
	if err != nil {
		return err
	}
	r.cert.Store(&cert)
	return nil
}

// GetCertificate returns the current pair; it is meant for tls.Config.GetCertificate.
func (r *Reloadable) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cert.Load(), nil
}

// Leaf returns the current leaf certificate.
func (r *Reloadable) Leaf() *x509.Certificate {
	return r.cert.Load().Leaf
}

package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Explain rewrites a TLS error from dialing the server into a one-line message that names the problem and
// the fix (an *ExplainedError); the original error stays wrapped for errors.Is and errors.As. It looks through
// any depth of wrapping. Errors that are not TLS errors are returned unchanged, nil included.
func Explain(err error) error {
	if err == nil {
		return nil
	}
	var (
		mismatch  *FingerprintMismatchError
		unknownSv *UnknownServerError
		changed   *ChangedKeyError
		hostErr   x509.HostnameError
		authErr   x509.UnknownAuthorityError
		invalid   x509.CertificateInvalidError
		verifyErr *tls.CertificateVerificationError
		recordErr tls.RecordHeaderError
	)
	var msg string
	switch {
	case errors.As(err, &mismatch):
		msg = mismatch.Error()
	case errors.As(err, &unknownSv):
		msg = unknownSv.Error()
	case errors.As(err, &changed):
		msg = changed.Error()
	case errors.As(err, &hostErr):
		msg = explainHostname(hostErr)
	case errors.As(err, &authErr):
		msg = "server certificate is signed by an unknown authority; pass --ca FILE or --fingerprint <sha256> " +
			"(print it with 'burrow cert fingerprint' on the server)"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired && invalid.Cert != nil:
		// x509 reports both "expired" and "not yet valid" as Expired.
		what := "server certificate"
		if errors.As(err, &verifyErr) && len(verifyErr.UnverifiedCertificates) > 0 &&
			!invalid.Cert.Equal(verifyErr.UnverifiedCertificates[0]) {
			what = fmt.Sprintf("certificate authority %q of the server certificate", invalid.Cert.Subject.CommonName)
		}
		if nb := invalid.Cert.NotBefore; time.Now().Before(nb) {
			msg = fmt.Sprintf("%s is not valid until %s; check the clocks on client and server",
				what, nb.UTC().Format(time.RFC3339))
		} else {
			msg = fmt.Sprintf("%s expired at %s; renew it on the server", what,
				invalid.Cert.NotAfter.UTC().Format(time.RFC3339))
		}
	case errors.As(err, &verifyErr), errors.As(err, &invalid):
		msg = "server certificate could not be verified; pass --ca FILE or --fingerprint <sha256>"
	case errors.As(err, &recordErr):
		msg = "server did not answer with TLS; check the URL scheme and port"
	case remoteAlert(err, "certificate required"):
		msg = "the server requires a client certificate signed by a CA it trusts (mutual TLS); pass --tls-cert and --tls-key with such a certificate"
	case remoteAlert(err, "bad certificate"), remoteAlert(err, "unknown certificate authority"),
		remoteAlert(err, "certificate expired"), remoteAlert(err, "unknown certificate"):
		msg = "the server rejected the client certificate (not signed by a CA it trusts, or expired); check --tls-cert"
	default:
		return err
	}
	return &ExplainedError{Message: msg, Err: err}
}

// IsVerification reports whether err is a failure to verify the server's certificate: a pin, a known key,
// a chain or a name that does not match.
func IsVerification(err error) bool {
	return errors.As(err, new(*FingerprintMismatchError)) || errors.As(err, new(*UnknownServerError)) ||
		errors.As(err, new(*ChangedKeyError)) || errors.As(err, new(*tls.CertificateVerificationError)) ||
		errors.As(err, new(x509.HostnameError)) || errors.As(err, new(x509.UnknownAuthorityError)) ||
		errors.As(err, new(x509.CertificateInvalidError))
}

// ExplainedError is what Explain returns: a one-line message naming the
// problem and the fix, wrapping the error it explains.
type ExplainedError struct {
	Message string
	Err     error
}

func (e *ExplainedError) Error() string { return e.Message }
func (e *ExplainedError) Unwrap() error { return e.Err }

// remoteAlert reports whether err is a TLS alert from the peer whose text
// contains what ("tls: certificate required", for instance).
func remoteAlert(err error, what string) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error" && op.Err != nil &&
		strings.Contains(op.Err.Error(), what)
}

func explainHostname(e x509.HostnameError) string {
	var names []string
	if c := e.Certificate; c != nil {
		names = append(names, c.DNSNames...)
		for _, ip := range c.IPAddresses {
			names = append(names, ip.String())
		}
	}
	if len(names) == 0 {
		return fmt.Sprintf("server certificate has no subject alternative names, so it is not valid for %s; "+
			"reissue it with the server's host names", e.Host)
	}
	return fmt.Sprintf("server certificate is valid for %v, not for %s; connect using one of those names or "+
		"pass --sni", names, e.Host)
}

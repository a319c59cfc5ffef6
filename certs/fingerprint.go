package certs

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// Fingerprint returns the lowercase hex SHA-256 of cert's DER-encoded SubjectPublicKeyInfo.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// FingerprintPEM returns the Fingerprint of the first CERTIFICATE block in certPEM.
func FingerprintPEM(certPEM []byte) (string, error) {
	for rest := certPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return "", errors.New("no PEM CERTIFICATE block found")
		}
		if b.Type == "CERTIFICATE" {
			cert, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return "", fmt.Errorf("parse certificate: %w", err)
			}
			return Fingerprint(cert), nil
		}
	}
}

// ParseFingerprint parses a SHA-256 fingerprint written as 64 hex digits (any case, optionally separated by
// colons) or as standard base64 with or without padding, optionally prefixed with "sha256:" (any case). It
// returns the 32-byte hash.
func ParseFingerprint(s string) ([]byte, error) {
	v := strings.TrimSpace(s)
	if len(v) >= len("sha256:") && strings.EqualFold(v[:len("sha256:")], "sha256:") {
		v = v[len("sha256:"):]
	}
	if h := strings.ReplaceAll(v, ":", ""); len(h) == 2*sha256.Size {
		if b, err := hex.DecodeString(h); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding} {
		if b, err := enc.DecodeString(v); err == nil && len(b) == sha256.Size {
			return b, nil
		}
	}
	return nil, fmt.Errorf("invalid fingerprint %q: want the SHA-256 of the server's public key as 64 hex digits "+
		"(colons allowed) or base64; print it with 'burrow cert fingerprint' on the server", s)
}

// Package certs provides Burrow's TLS material: it generates self-signed server certificates, loads and
// hot-reloads certificate/key pairs, computes and parses certificate fingerprints, and builds the server and
// client *tls.Config values, including certificate pinning for clients.
//
// A fingerprint is the lowercase hex SHA-256 of a certificate's DER-encoded SubjectPublicKeyInfo, the same
// value as
//
//	openssl x509 -in cert.pem -pubkey -noout | openssl pkey -pubin -outform der | sha256sum
//
// Because it hashes the public key rather than the whole certificate, a pin survives renewing a certificate
// with the same key.
//
// Explain turns the TLS verification errors a dial can fail with into one-line messages that say what to do.
package certs

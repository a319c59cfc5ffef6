package certs_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"strings"
	"time"

	"github.com/burrowtun/burrow/certs"
)

func ExampleGenerateSelfSigned() {
	certPEM, keyPEM, err := certs.GenerateSelfSigned([]string{"tunnel.example.com", "203.0.113.7"}, 365*24*time.Hour)
	if err != nil {
		log.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(cert.Leaf.DNSNames, cert.Leaf.IPAddresses)

	// Clients pin this value with --fingerprint.
	fp := certs.Fingerprint(cert.Leaf)
	fromPEM, _ := certs.FingerprintPEM(certPEM)
	fmt.Println(len(fp), fp == fromPEM)
	// Output:
	// [tunnel.example.com] [203.0.113.7]
	// 64 true
}

func ExampleClientConfig() {
	// The server: a self-signed certificate served on a loopback listener.
	certPEM, keyPEM, err := certs.GenerateSelfSigned([]string{"localhost"}, time.Hour)
	if err != nil {
		log.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		log.Fatal(err)
	}
	srvCfg := certs.ServerConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil })
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	defer func() { ln.Close(); <-done }()

	// The client pins the server's fingerprint instead of trusting a CA.
	fp, _ := certs.FingerprintPEM(certPEM)
	for _, pin := range []string{fp, "sha256:" + strings.Repeat("00", 32)} {
		cfg, err := certs.ClientConfig(certs.ClientOptions{Fingerprint: pin, ServerName: "localhost"})
		if err != nil {
			log.Fatal(err)
		}
		conn, err := (&tls.Dialer{Config: cfg}).Dial("tcp", ln.Addr().String())
		var mismatch *certs.FingerprintMismatchError
		switch {
		case err == nil:
			fmt.Println("connected, negotiated", conn.(*tls.Conn).ConnectionState().NegotiatedProtocol)
			conn.Close()
		case errors.As(err, &mismatch):
			fmt.Println("refused: pinned fingerprint does not match")
		default:
			log.Fatal(err)
		}
	}
	// Output:
	// connected, negotiated http/1.1
	// refused: pinned fingerprint does not match
}

func ExampleExplain() {
	// Errors that are not about TLS pass through unchanged.
	err := fmt.Errorf("dial wss://tunnel.example.com: %w", io.ErrUnexpectedEOF)
	fmt.Println(certs.Explain(err) == err)

	// TLS errors, however deeply wrapped, become a one-line explanation
	// that still wraps the original.
	err = fmt.Errorf("dial wss://tunnel.example.com: %w", &certs.FingerprintMismatchError{Got: "aa", Want: "bb"})
	fmt.Println(certs.Explain(err))
	// Output:
	// true
	// server certificate fingerprint aa does not match --fingerprint bb; get the server's fingerprint with 'burrow cert fingerprint' on the server
}

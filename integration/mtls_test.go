package integration

import (
	"strings"
	"testing"
)

// TestMutualTLS: a server started with --tls-client-ca serves a client
// presenting a certificate from that CA, and refuses, with one clear
// line, a client without a certificate and one whose certificate comes
// from another CA.
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	trusted := newCert(t, "alice-laptop") // self-signed: its own CA
	stranger := newCert(t, "eve-laptop")
	srv := startTestServer(t, nil, "--tls-client-ca", trusted.certFile)
	echo := startEcho(t)

	_, locals := startClient(t, srv.url, testUser+":"+testPass,
		[]string{"--fingerprint", srv.cert.fingerprint, "--tls-cert", trusted.certFile, "--tls-key", trusted.keyFile},
		"127.0.0.1:0:"+echo)
	echoRoundTrip(t, locals[0], []byte("mutual TLS"))

	for _, tc := range []struct {
		name  string
		flags []string
	}{
		{"no certificate", nil},
		{"another CA", []string{"--tls-cert", stranger.certFile, "--tls-key", stranger.keyFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flags := append([]string{"--fingerprint", srv.cert.fingerprint}, tc.flags...)
			_, line := runFailingClient(t, srv.url, testUser+":"+testPass, flags, "127.0.0.1:0:"+echo)
			if !strings.Contains(line, "client certificate") || !strings.Contains(line, "--tls-cert") {
				t.Errorf("client said %q, want a line about the client certificate naming --tls-cert", line)
			}
		})
	}
}

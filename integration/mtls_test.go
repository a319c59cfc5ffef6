package integration

import (
	"strings"
	"testing"

	"github.com/burrowtun/burrow/integration/harness"
)

// TestMutualTLS: a server started with --tls-client-ca serves a client
// presenting a certificate from that CA, and refuses, with one clear
// line, a client without a certificate and one whose certificate comes
// from another CA.
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	trusted := burrow.NewCert(t, "alice-laptop") // self-signed: its own CA
	stranger := burrow.NewCert(t, "eve-laptop")
	srv := burrow.StartTestServer(t, nil, "--tls-client-ca", trusted.CertFile)
	echo := harness.StartEcho(t)

	_, locals := burrow.StartClient(t, srv.URL, harness.TestUser+":"+harness.TestPass,
		[]string{"--fingerprint", srv.Cert.Fingerprint, "--tls-cert", trusted.CertFile, "--tls-key", trusted.KeyFile},
		"127.0.0.1:0:"+echo)
	harness.EchoRoundTrip(t, locals[0], []byte("mutual TLS"))

	for _, tc := range []struct {
		name  string
		flags []string
	}{
		{"no certificate", nil},
		{"another CA", []string{"--tls-cert", stranger.CertFile, "--tls-key", stranger.KeyFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flags := append([]string{"--fingerprint", srv.Cert.Fingerprint}, tc.flags...)
			_, line := runFailingClient(t, srv.URL, harness.TestUser+":"+harness.TestPass, flags, "127.0.0.1:0:"+echo)
			if !strings.Contains(line, "client certificate") || !strings.Contains(line, "--tls-cert") {
				t.Errorf("client said %q, want a line about the client certificate naming --tls-cert", line)
			}
		})
	}
}

package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/burrowtun/burrow/mux"
)

// TestExplainHandshake: the refusals of an upgrade read as their causes,
// and the ones no retry can fix are marked so.
func TestExplainHandshake(t *testing.T) {
	c := &Client{cfg: Config{URL: "wss://tunnel.example:443", Username: "alice"}}
	tests := []struct {
		name      string
		err       error
		want      string
		permanent bool
	}{
		{"upgrade removed", &mux.HandshakeError{StatusCode: http.StatusUpgradeRequired, UpgradeRemoved: true, Via: "1.1 corp (squid/5.7)"},
			"a proxy between here and the server removed the WebSocket upgrade (Via: 1.1 corp (squid/5.7)) (server wss://tunnel.example:443); " +
				"use --transport auto (or stream, or poll) to tunnel over plain HTTP, " +
				"or ask for WebSocket to be allowed to this server (squid: http_upgrade_request_protocols websocket allow all)", true},
		{"upgrade removed, no via", &mux.HandshakeError{StatusCode: http.StatusUpgradeRequired, UpgradeRemoved: true},
			"a proxy between here and the server removed the WebSocket upgrade (server wss://tunnel.example:443); ", true},
		{"credentials", &mux.HandshakeError{StatusCode: http.StatusUnauthorized},
			`credentials rejected for user "alice" by wss://tunnel.example:443 (HTTP 401); check --auth`, true},
		{"not found", &mux.HandshakeError{StatusCode: http.StatusNotFound},
			"server refused the tunnel (HTTP 404) (server wss://tunnel.example:443); check the URL", true},
		{"busy", &mux.HandshakeError{StatusCode: http.StatusServiceUnavailable}, "dial: server refused the tunnel (HTTP 503)", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := c.explain(fmt.Errorf("dial: %w", tt.err))
			if !strings.HasPrefix(got.Error(), tt.want) {
				t.Errorf("explain = %q, want it to start %q", got, tt.want)
			}
			if permanent(got) != tt.permanent {
				t.Errorf("permanent = %v, want %v", permanent(got), tt.permanent)
			}
		})
	}
	if !errors.Is(c.explain(&mux.HandshakeError{StatusCode: http.StatusUnauthorized}), ErrUnauthorized) {
		t.Error("a 401 does not wrap ErrUnauthorized")
	}
}

// TestExplainNetwork: a server that cannot be reached is said so in the
// user's words, naming what to check, and is retried.
func TestExplainNetwork(t *testing.T) {
	c := &Client{cfg: Config{URL: "wss://tunnel.example:443", DialTimeout: 30 * time.Second}}
	refused := &net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 443},
		Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"refused", refused, "nothing listens at 192.0.2.1:443 (connection refused); is the server running, and are the host and port of wss://tunnel.example:443 right?"},
		{"no such host", &net.DNSError{Name: "tunnel.example", Err: "no such host", IsNotFound: true},
			`the host name "tunnel.example" does not exist; check the server URL wss://tunnel.example:443`},
		{"resolver down", &net.DNSError{Name: "tunnel.example", Err: "server misbehaving"},
			`the host name "tunnel.example" could not be resolved (server misbehaving); check the server URL wss://tunnel.example:443`},
		{"timeout", fmt.Errorf("dial: %w", context.DeadlineExceeded),
			"no answer from wss://tunnel.example:443 within 30s; check the host and port, and any firewall or proxy in the way"},
	} {
		got := c.explain(fmt.Errorf("dial tcp: %w", tc.err))
		if got.Error() != tc.want || permanent(got) {
			t.Errorf("%s: explain = %q (permanent %v), want %q, retried", tc.name, got, permanent(got), tc.want)
		}
	}
}

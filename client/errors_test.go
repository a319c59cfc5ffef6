package client

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

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

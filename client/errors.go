package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"

	"github.com/burrowtun/burrow/certs"
	"github.com/burrowtun/burrow/mux"
)

// ErrUnauthorized is wrapped by the error Run returns when the server
// rejects the credentials.
var ErrUnauthorized = errors.New("credentials rejected")

// permanentError marks a connection failure that retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// explain turns a failed dial into one line saying what went wrong and
// what to do, and marks the failures that retrying cannot fix.
func (c *Client) explain(err error) error {
	var he *mux.HandshakeError
	switch {
	case errors.As(err, &he):
		if he.UpgradeRemoved {
			return &permanentError{&upgradeRemovedError{server: c.cfg.URL, via: he.Via}}
		}
		switch he.StatusCode {
		case http.StatusUnauthorized:
			return &permanentError{fmt.Errorf("%w for user %q by %s (HTTP 401); check --auth", ErrUnauthorized, c.cfg.Username, c.cfg.URL)}
		case http.StatusBadRequest, http.StatusNotFound, http.StatusForbidden:
			return &permanentError{fmt.Errorf("%s (server %s); check the URL and that both ends run compatible burrow versions", he, c.cfg.URL)}
		}
		return err
	case errors.Is(err, mux.ErrNotNegotiated):
		return &permanentError{fmt.Errorf("%w at %s; is it a burrow server of a compatible version?", err, c.cfg.URL)}
	case errors.As(err, new(*ProxyError)):
		var pe *ProxyError
		errors.As(err, &pe)
		if pe.StatusCode == http.StatusProxyAuthRequired || pe.StatusCode == http.StatusForbidden {
			return &permanentError{pe}
		}
		return pe
	case errors.Is(err, http.ErrSchemeMismatch), errors.As(err, new(tls.RecordHeaderError)):
		return &permanentError{fmt.Errorf("%s answered in plain HTTP, not TLS; check the port, or put TLS in front of a --tls off server", c.cfg.URL)}
	}
	if explained := certs.Explain(err); explained != err {
		return &permanentError{fmt.Errorf("cannot connect to %s: %w", c.cfg.URL, explained)}
	}
	return c.explainNetwork(err)
}

// explainNetwork says in one line why the server (or the proxy) could not
// be reached, when err is a failure to reach it; otherwise it returns err.
// These are worth retrying: a server restarting refuses for a moment.
func (c *Client) explainNetwork(err error) error {
	via := ""
	if c.cfg.Proxy != nil {
		via = " through proxy " + c.cfg.Proxy.Redacted()
	}
	var dns *net.DNSError
	var op *net.OpError
	switch {
	case errors.As(err, &dns):
		what := "does not exist"
		if !dns.IsNotFound {
			what = "could not be resolved (" + dns.Err + ")"
		}
		return fmt.Errorf("the host name %q %s; check the server URL %s%s", dns.Name, what, c.cfg.URL, via)
	case errors.Is(err, syscall.ECONNREFUSED) && errors.As(err, &op):
		return fmt.Errorf("nothing listens at %s (connection refused); is the server running, and are the host and port of %s right?", op.Addr, c.cfg.URL)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("connection refused%s to %s; is the server running, and is the port right?", via, c.cfg.URL)
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return fmt.Errorf("no route to %s%s; check the host, and the network this machine is on", c.cfg.URL, via)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("no answer from %s%s within %s; check the host and port, and any firewall or proxy in the way", c.cfg.URL, via, c.cfg.DialTimeout)
	}
	return err
}

// upgradeRemovedError is a WebSocket upgrade that a party on the way, a
// proxy named by via if it said, removed from the request.
type upgradeRemovedError struct {
	server, via string
}

// fact is what happened, without what to do.
func (e *upgradeRemovedError) fact() string {
	via := ""
	if e.via != "" {
		via = fmt.Sprintf(" (Via: %s)", e.via)
	}
	return "a proxy between here and the server removed the WebSocket upgrade" + via
}

func (e *upgradeRemovedError) Error() string {
	return fmt.Sprintf("%s (server %s); use --transport auto (or stream, or poll) to tunnel over plain HTTP, "+
		"or ask for WebSocket to be allowed to this server (squid: http_upgrade_request_protocols websocket allow all)",
		e.fact(), e.server)
}

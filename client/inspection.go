package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"

	"github.com/burrowtun/burrow/certs"
	"github.com/burrowtun/burrow/inner"
	"github.com/burrowtun/burrow/mux"
)

// Inspection is what a client does when its TLS connection is not the
// server's: a party on the way, a TLS-inspecting proxy, terminates it with
// a certificate of its own.
type Inspection int

const (
	// InspectionE2E runs the session end to end inside the proxy's
	// connection, in a TLS connection to the server's own key (package
	// inner), with the credentials inside it: the proxy sees neither.
	InspectionE2E Inspection = iota
	// InspectionRefuse refuses to connect through such a proxy.
	InspectionRefuse
	// InspectionAllow accepts the proxy as a trusted party, if the
	// system's roots vouch for its certificate: the session runs as
	// without it, and the proxy can read it.
	InspectionAllow
)

// ParseInspection reads the --inspection value: e2e, refuse or allow.
func ParseInspection(s string) (Inspection, error) {
	switch s {
	case "", "e2e":
		return InspectionE2E, nil
	case "refuse":
		return InspectionRefuse, nil
	case "allow":
		return InspectionAllow, nil
	}
	return 0, fmt.Errorf("--inspection %q: want e2e (tunnel end to end through a TLS-inspecting proxy), refuse or allow", s)
}

func (i Inspection) String() string {
	switch i {
	case InspectionRefuse:
		return "refuse"
	case InspectionAllow:
		return "allow"
	}
	return "e2e"
}

// dialTLS opens the TCP connection to the server (through the proxy, if
// any) and runs the TLS handshake on it without verifying the server: the
// caller verifies what it got with certs.Verify and decides from that how
// to go on.
func (c *Client) dialTLS(ctx context.Context) (*tls.Conn, error) {
	u, err := url.Parse(c.cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("server URL %q: %w", c.cfg.URL, err)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	raw, err := c.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	raw = mux.CoalesceWrites(raw, mux.MaxBatch(c.cfg.copyBuffer()))
	cfg := c.outer.Clone()
	cfg.InsecureSkipVerify = true // verified by the caller, with certs.Verify
	cfg.VerifyConnection, cfg.VerifyPeerCertificate = nil, nil
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return conn, nil
}

// oneConn is an http.Client whose every request goes over conn, once.
func oneConn(conn net.Conn) *http.Client {
	var used atomic.Bool
	return &http.Client{Transport: &http.Transport{
		DialTLSContext: func(context.Context, string, string) (net.Conn, error) {
			if used.Swap(true) {
				return nil, errors.New("the connection to the server is already in use")
			}
			return conn, nil
		},
		DisableKeepAlives: true,
	}}
}

// connectInspected goes on over conn, whose TLS connection failed the
// client's verification (verr), as c.cfg.Inspection says: the party that
// answered may be a TLS-inspecting proxy in front of the real server.
// Unless allowed to trust the proxy, it sends the upgrade without
// credentials and runs the inner handshake, verified as the outer one
// would have been: if the server's own key answers there, the session
// runs inside; if not, verr was about the server itself, and the inner
// handshake says so.
func (c *Client) connectInspected(ctx context.Context, conn *tls.Conn, t Transport, verr error) (*mux.Session, error) {
	outer := conn.ConnectionState()
	if c.cfg.Inspection == InspectionAllow {
		if err := certs.VerifySystem(outer); err != nil {
			conn.Close()
			return nil, c.explain(verr)
		}
		c.allowed(outer)
		return c.upgrade(ctx, conn, t)
	}
	ws, answer, err := c.upgradeWithout(ctx, conn, t, inner.Header, inner.Version)
	if err != nil {
		var he *mux.HandshakeError
		if errors.As(err, &he) && (he.StatusCode == http.StatusUnauthorized || he.StatusCode == http.StatusNotImplemented) {
			return nil, &permanentError{fmt.Errorf("%v; the server (wire version %s without %s) cannot run the session end to end "+
				"through a TLS-inspecting proxy: upgrade it, and give it its certificate if it runs with --tls off",
				c.explain(verr), mux.Subprotocol, inner.ALPN)}
		}
		return nil, c.explain(err)
	}
	if answer.Get(inner.Header) != inner.Version {
		ws.Close()
		return nil, &permanentError{fmt.Errorf("%v; the server did not agree to an end-to-end session (%s)", c.explain(verr), inner.ALPN)}
	}
	return c.endToEnd(ctx, ws, outer, verr)
}

// connectBound goes on over conn, whose TLS connection the client trusts
// through a CA: as a TLS-inspecting proxy whose CA the client holds would
// be trusted. It sends the upgrade without credentials, asking for the
// server's channel binding (inner.BindingHeader). If the server's key
// signed this TLS session, the login follows on the WebSocket and the
// session runs there, as fast as ever; if it did not, another party
// terminates the session, and c.cfg.Inspection says what to do. A server
// that cannot bind (it runs behind a TLS-terminating proxy of its own) is
// taken at its CA's word, as before.
func (c *Client) connectBound(ctx context.Context, conn *tls.Conn, t Transport) (*mux.Session, error) {
	outer := conn.ConnectionState()
	ws, answer, err := c.upgradeWithout(ctx, conn, t, inner.BindingHeader, inner.BindingMethod)
	if err != nil {
		var he *mux.HandshakeError
		if errors.As(err, &he) && !he.UpgradeRemoved &&
			(he.StatusCode == http.StatusUnauthorized || he.StatusCode == http.StatusNotImplemented) {
			// A server that predates channel binding: as it always was.
			c.log.Debug("the server does not bind its TLS sessions; logging in as before", "server", c.cfg.URL)
			return c.connectPlain(ctx, t)
		}
		return nil, c.explain(err)
	}
	berr := inner.VerifyBinding(answer, outer, c.outer.ServerName, c.outer.RootCAs)
	if berr == nil || errors.Is(berr, inner.ErrNoBinding) {
		return c.logIn(ctx, ws)
	}
	c.log.Debug("channel binding failed", "err", berr)
	if c.cfg.Inspection == InspectionAllow {
		c.allowed(outer)
		return c.logIn(ctx, ws)
	}
	return c.endToEnd(ctx, ws, outer, nil)
}

// connectPlain connects again, sending the credentials with the upgrade
// over a TLS connection the client trusts.
func (c *Client) connectPlain(ctx context.Context, t Transport) (*mux.Session, error) {
	conn, err := c.dialTLS(ctx)
	if err != nil {
		return nil, c.explain(err)
	}
	if err := certs.Verify(c.outer, conn.ConnectionState()); err != nil {
		conn.Close()
		return nil, c.explain(err)
	}
	return c.upgrade(ctx, conn, t)
}

// upgradeWithout opens the connection over t, starting on conn, without
// credentials, with the header name: value asking for what follows
// instead.
func (c *Client) upgradeWithout(ctx context.Context, conn *tls.Conn, t Transport, name, value string) (net.Conn, http.Header, error) {
	header := c.cfg.Header.Clone()
	if header == nil {
		header = http.Header{}
	}
	header.Del("Authorization")
	header.Set(name, value)
	return c.carry(ctx, conn, t, header)
}

// endToEnd runs the inner handshake on ws, verified as c.tls says, and
// the session inside it, unless the key that answers there shows a
// TLS-inspecting proxy (outer is the TLS connection the proxy terminates)
// and c.cfg.Inspection refuses it. When the inner certificate fails the
// client's verification too, the problem is what verr, the outer
// connection's failure, says, if there was one: the error the user would
// have seen without a proxy.
func (c *Client) endToEnd(ctx context.Context, ws net.Conn, outer tls.ConnectionState, verr error) (*mux.Session, error) {
	issuer := outer.PeerCertificates[0].Issuer.String()
	ic, err := inner.Handshake(ctx, ws, c.tls)
	if err != nil {
		ws.Close()
		if verr != nil && certs.IsVerification(err) {
			return nil, c.explain(verr)
		}
		return nil, c.explain(err)
	}
	inspected := !sameKey(outer, ic.ConnectionState())
	if inspected && c.cfg.Inspection == InspectionRefuse {
		ws.Close()
		return nil, &permanentError{fmt.Errorf("TLS inspection: a proxy on the way to %s terminates the TLS connection "+
			"with a certificate issued by %q; refused as --inspection refuse says (--inspection e2e tunnels end to end through it)",
			c.cfg.URL, issuer)}
	}
	sess, err := c.logIn(ctx, ic)
	if err == nil && inspected {
		c.log.Info("TLS inspection: a proxy on the way terminates the TLS connection; the session runs end to end "+
			"inside it, where the proxy reads nothing (--inspection refuse or allow to change this)", "issuer", issuer, "server", c.cfg.URL)
	}
	return sess, err
}

// logIn sends the login on conn, and starts the session there once the
// server accepts it.
func (c *Client) logIn(ctx context.Context, conn net.Conn) (*mux.Session, error) {
	if err := inner.LogIn(ctx, conn, inner.Login{User: c.cfg.Username, Password: c.cfg.Password}); err != nil {
		conn.Close()
		var refused *inner.RefusedError
		if errors.As(err, &refused) {
			return nil, c.explain(refusal(refused.Verdict))
		}
		return nil, c.explain(err)
	}
	return mux.Client(conn, c.muxConfig())
}

// allowed warns that the proxy of outer reads the tunnel, as
// --inspection allow lets it.
func (c *Client) allowed(outer tls.ConnectionState) {
	c.log.Warn("TLS inspection: a proxy on the way terminates the TLS connection, and can read the tunnel; "+
		"going on as --inspection allow says (--inspection e2e keeps it end to end)",
		"issuer", outer.PeerCertificates[0].Issuer.String(), "server", c.cfg.URL)
}

// sameKey reports whether a and b's servers showed the same key.
func sameKey(a, b tls.ConnectionState) bool {
	return len(a.PeerCertificates) > 0 && len(b.PeerCertificates) > 0 &&
		bytes.Equal(a.PeerCertificates[0].RawSubjectPublicKeyInfo, b.PeerCertificates[0].RawSubjectPublicKeyInfo)
}

// refusal is a refused inner login as the refused upgrade of the same
// login would have been, so that it is explained and retried the same.
func refusal(v inner.Verdict) *mux.HandshakeError {
	e := &mux.HandshakeError{StatusCode: http.StatusUnauthorized, Message: v.Message, RetryAfter: v.RetryAfter}
	switch v.Status {
	case inner.StatusLimited:
		e.StatusCode = http.StatusTooManyRequests
	case inner.StatusBusy:
		e.StatusCode = http.StatusServiceUnavailable
	}
	return e
}

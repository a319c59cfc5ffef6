package server

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/burrowtun/burrow/inner"
	"github.com/burrowtun/burrow/mux"
)

// serveUnauthenticated serves the upgrade of a client that sent no
// credentials where a party on the way could read them: one asking for an
// end-to-end session (inner.Header), whose TLS connection another party
// terminates, and one asking for channel binding (inner.BindingHeader),
// which trusts the server through a CA and first wants to know that its
// TLS session is the server's. The upgrade is counted against its source
// address as a login until the login that follows it succeeds, so that
// requests without valid credentials are rate-limited as failed logins
// are; that login goes through the same checks as one in a header.
func (s *Server) serveUnauthenticated(w http.ResponseWriter, r *http.Request, start time.Time, car carrier) {
	source := s.sourceAddr(r)
	innerOnly := r.Header.Get(inner.Header) != ""
	switch {
	case innerOnly && (s.cfg.Inner == nil || r.Header.Get(inner.Header) != inner.Version):
		http.Error(w, "this server offers no end-to-end session ("+inner.ALPN+") through TLS inspection", http.StatusNotImplemented)
		return
	case !innerOnly && r.Header.Get(inner.BindingHeader) != inner.BindingMethod:
		http.Error(w, "this server binds its TLS sessions only by "+inner.BindingMethod, http.StatusNotImplemented)
		return
	}
	bySource, ok := s.beginAttempt(w, source)
	if !ok {
		return
	}
	if innerOnly {
		w.Header().Set(inner.Header, inner.Version)
	} else {
		s.bind(w.Header(), r)
	}
	conn, err := car.accept(w, r)
	if err != nil {
		s.log.Warn("upgrade failed", "source", source, "transport", car.name, "err", err)
		return
	}
	car.then(func() {
		s.logInAfter(context.WithoutCancel(r.Context()), conn, innerOnly, source, &bySource, start, car.name)
	})
}

// logInAfter takes the login of a client that opened conn without
// credentials (innerOnly: for an end-to-end session; else after a channel
// binding), and runs its session.
func (s *Server) logInAfter(ctx context.Context, conn net.Conn, innerOnly bool, source string, bySource *Attempt, start time.Time, carrier string) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.HeaderTimeout)
	defer cancel()
	var user *User
	check := func(ctx context.Context, l inner.Login) inner.Verdict {
		u, refused := s.checkLogin(ctx, source, l.User, l.Password, bySource)
		if refused != nil {
			return refused.verdict()
		}
		if err := s.admit(u.Name); err != nil {
			if s.refusals.note("session_limit", source) {
				s.log.Warn("session refused", "user", u.Name, "source", source, "err", err)
			}
			return inner.Verdict{Status: inner.StatusBusy, RetryAfter: 30 * time.Second, Message: err.Error()}
		}
		user = u
		return inner.Verdict{Status: inner.StatusOK}
	}
	endToEnd := innerOnly
	var sessConn net.Conn
	var err error
	if !innerOnly {
		// After the binding the client sends its login, or, having found
		// another party's TLS session, starts the inner handshake.
		first, err := readFirst(ctx, conn)
		if err != nil {
			conn.Close()
			s.log.Debug("client sent nothing after the channel binding", "source", source, "err", err)
			return
		}
		conn = &prefixConn{Conn: conn, first: first}
		endToEnd = first[0] == tlsHandshakeRecord
	}
	if endToEnd {
		sessConn, _, err = inner.Server(ctx, conn, s.cfg.Inner, check)
	} else if sessConn, err = plainLogin(ctx, conn, check); err == nil {
		sessConn = conn.(*prefixConn).Conn // the login took the first byte: the WebSocket itself, as fast as ever
	}
	if err != nil {
		if user != nil {
			s.unreserve(user.Name)
		}
		conn.Close()
		if !errors.As(err, new(*inner.RefusedError)) {
			s.log.Warn("login after the upgrade failed", "source", source, "err", err)
		}
		return
	}
	ysess, err := mux.Server(sessConn, s.cfg.Mux)
	if err != nil {
		s.unreserve(user.Name)
		s.log.Warn("session failed to start", "user", user.Name, "source", source, "err", err)
		return
	}
	if endToEnd {
		s.log.Info("end-to-end session: the client's TLS connection ends on the way, at a TLS-inspecting proxy",
			"user", user.Name, "source", source)
	}
	s.run(ysess, user, source, start, carrier)
}

// tlsHandshakeRecord is the first byte of a TLS connection (a handshake
// record); a login starts with its version, 1.
const tlsHandshakeRecord = 22

// bind sets the channel binding of r's TLS session on h, when the server
// terminates that session itself and has its certificate: behind a
// TLS-terminating proxy (--tls off) there is nothing to bind, and the
// client is told nothing.
func (s *Server) bind(h http.Header, r *http.Request) {
	if r.TLS == nil || s.cfg.Inner == nil {
		return
	}
	cert, err := s.certificate(r.TLS.ServerName)
	if err == nil {
		var ekm []byte
		if ekm, err = inner.ExporterValue(*r.TLS); err == nil {
			err = inner.Bind(h, cert, ekm)
		}
	}
	if err != nil {
		s.log.Warn("cannot bind the TLS session", "err", err)
	}
}

// certificate is the certificate the server shows for name.
func (s *Server) certificate(name string) (*tls.Certificate, error) {
	if get := s.cfg.Inner.GetCertificate; get != nil {
		return get(&tls.ClientHelloInfo{ServerName: name})
	}
	if len(s.cfg.Inner.Certificates) == 0 {
		return nil, errors.New("no certificate")
	}
	return &s.cfg.Inner.Certificates[0], nil
}

// readFirst reads the first byte the client sends on conn, within ctx.
func readFirst(ctx context.Context, conn net.Conn) ([]byte, error) {
	if d, ok := ctx.Deadline(); ok {
		conn.SetReadDeadline(d)
		defer conn.SetReadDeadline(time.Time{})
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(conn, b); err != nil {
		return nil, err
	}
	return b, nil
}

// prefixConn is a connection whose first bytes were read already.
type prefixConn struct {
	net.Conn
	first []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.first) > 0 {
		n := copy(p, c.first)
		c.first = c.first[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// plainLogin reads the login a client sends on conn after a matching
// channel binding, and answers it with check's verdict; conn then carries
// the session.
func plainLogin(ctx context.Context, conn net.Conn, check func(context.Context, inner.Login) inner.Verdict) (net.Conn, error) {
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
		defer conn.SetDeadline(time.Time{})
	}
	login, err := inner.ReadLogin(conn)
	if err != nil {
		return nil, err
	}
	v := check(ctx, login)
	if err := inner.WriteVerdict(conn, v); err != nil {
		return nil, err
	}
	if v.Status != inner.StatusOK {
		return nil, &inner.RefusedError{Verdict: v}
	}
	return conn, nil
}

// verdict is the refusal as the inner login's answer says it.
func (r *loginRefusal) verdict() inner.Verdict {
	switch r.reason {
	case "rate_limited":
		return inner.Verdict{Status: inner.StatusLimited, RetryAfter: r.retry, Message: "too many failed logins; retry later"}
	case "busy":
		return inner.Verdict{Status: inner.StatusBusy, RetryAfter: r.retry, Message: "the server is busy checking other logins; retry later"}
	}
	return inner.Verdict{Status: inner.StatusDenied, Message: "invalid username or password"}
}

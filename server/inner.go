package server

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/burrowtun/burrow/inner"
	"github.com/burrowtun/burrow/mux"
)

// serveInner serves the upgrade of a client that asks for an end-to-end
// session (inner.Header): one whose TLS connection was terminated on the
// way, by a TLS-inspecting proxy, so that it sent no credentials where
// the proxy reads them. The upgrade is counted against its source address
// as a login until the login inside the inner connection succeeds, so
// that requests without valid credentials are rate-limited as failed
// logins are; that login goes through the same checks as one in a header.
func (s *Server) serveInner(w http.ResponseWriter, r *http.Request, start time.Time) {
	source := s.sourceAddr(r)
	if s.cfg.Inner == nil || r.Header.Get(inner.Header) != inner.Version {
		http.Error(w, "this server offers no end-to-end session ("+inner.ALPN+") through TLS inspection", http.StatusNotImplemented)
		return
	}
	bySource, ok, retry := s.limiter.Begin(source, time.Now())
	if !ok {
		if s.refusals.note("rate_limited", source) {
			s.log.Warn("login refused: too many failures", "source", source, "retry_after", retry.Round(time.Second))
		}
		tooManyFailures(w, retry)
		s.metrics.authFailed("rate_limited")
		return
	}
	w.Header().Set(inner.Header, inner.Version)
	conn, err := mux.AcceptWebSocket(w, r)
	if err != nil {
		s.log.Warn("upgrade failed", "source", source, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.HeaderTimeout)
	defer cancel()
	var user *User
	ic, _, err := inner.Server(ctx, conn, s.cfg.Inner, func(ctx context.Context, l inner.Login) inner.Verdict {
		u, refused := s.checkLogin(ctx, source, l.User, l.Password, &bySource)
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
	})
	if err != nil {
		if user != nil {
			s.unreserve(user.Name)
		}
		conn.Close()
		if !errors.As(err, new(*inner.RefusedError)) {
			s.log.Warn("end-to-end handshake failed", "source", source, "err", err)
		}
		return
	}
	ysess, err := mux.Server(ic, s.cfg.Mux)
	if err != nil {
		s.unreserve(user.Name)
		s.log.Warn("session failed to start", "user", user.Name, "source", source, "err", err)
		return
	}
	s.log.Info("end-to-end session: the client's TLS connection ends on the way, at a TLS-inspecting proxy",
		"user", user.Name, "source", source)
	s.run(ysess, user, source, start)
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

package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"github.com/burrowtun/burrow/relay"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/burrowtun/burrow/httpconn"
	"github.com/burrowtun/burrow/inner"
	"github.com/burrowtun/burrow/mux"
)

// Authenticator checks a user's credentials. *Users implements it.
type Authenticator interface {
	Authenticate(name, password string) (*User, error)
}

var _ Authenticator = (*Users)(nil)

// FileService serves the file-transfer streams of a session; the
// transfer package's server implements it. user is the authenticated
// user, whose permissions and root the service applies.
type FileService interface {
	ServeFiles(ctx context.Context, user string, rw io.ReadWriteCloser) error
}

// Dialer opens the connections that streams ask for. *net.Dialer
// implements it.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Config configures a Server. Zero fields mean the defaults.
type Config struct {
	// Auth checks credentials. Required; SetAuth replaces it at run time.
	Auth Authenticator
	// Path is the URL path of the tunnel endpoint. Default "/".
	Path string
	// Backend, when set, serves every request that is not a tunnel
	// upgrade (a reverse proxy to a real website, say), so the server
	// looks like that site. Without it such requests get a plain 404.
	Backend http.Handler
	// TrustedProxies are the reverse proxies whose X-Forwarded-For is
	// believed when telling where a client comes from (for logs and login
	// rate limits). Other peers' X-Forwarded-For is ignored.
	TrustedProxies []netip.Prefix
	// Inner, when set, is the TLS configuration (the server's certificate)
	// of end-to-end sessions (package inner): those of clients that found
	// their TLS connection terminated on the way, by a TLS-inspecting proxy.
	// Without it such clients are refused.
	Inner *tls.Config
	// Mux tunes sessions; nil means mux's defaults.
	Mux *mux.Config
	// HTTP tunes the HTTP transports (package httpconn) that carry the
	// sessions of clients whose path refuses WebSocket. Its MaxConns
	// defaults to MaxSessions.
	HTTP httpconn.ServerConfig
	// Logger receives one line per session and per stream. Default: discard.
	Logger *slog.Logger
	// Dialer dials targets. Default: a net.Dialer with DialTimeout that
	// refuses the addresses of Forbidden and, unless AllowLinkLocal,
	// link-local and cloud metadata addresses, checked on the resolved
	// address so a DNS name cannot smuggle them in.
	Dialer Dialer
	// AllowLinkLocal lets streams reach 169.254.0.0/16, fe80::/10 and
	// fd00:ec2::254 (cloud metadata services live there).
	AllowLinkLocal bool
	// Forbidden are addresses no stream may reach, such as the server's
	// own admin listener. An unspecified IP (0.0.0.0, ::) forbids the
	// port on every address.
	Forbidden []netip.AddrPort
	// MaxSessions bounds the sessions of all users together, and
	// MaxSessionsPerUser those of one user. Defaults 10000 and 100.
	MaxSessions, MaxSessionsPerUser int
	// MaxStreamsPerSession bounds the streams open at once on one
	// session. Default 16384.
	MaxStreamsPerSession int
	// DialTimeout bounds a dial to a target. Default 10s.
	DialTimeout time.Duration
	// HeaderTimeout bounds how long a new stream may take to send its
	// header. Default 10s.
	HeaderTimeout time.Duration
	// Files, when set, serves file-transfer streams (send, fetch, ls).
	Files FileService
	// AllowReverse lets clients ask the server to listen for them
	// (reverse remotes, R:...). Each bind is still checked against the
	// user's allow list as "R:host:port" ("R:host:port/udp" for UDP).
	AllowReverse bool
	// UDPIdle ends a UDP flow after this long without a datagram.
	// Default udp.DefaultIdle.
	UDPIdle time.Duration
	// UDPMaxFlows bounds the flows of one reverse UDP listener.
	// Default udp.DefaultMaxFlows.
	UDPMaxFlows int
	// Metrics, when set, records sessions, streams, bytes and logins.
	Metrics *Metrics
	// LoginFailures is how many failed logins a source address may make
	// per LoginWindow before it is answered 429, and a third of how many
	// may be made as one user name. Default 10 per minute. A login counts
	// from when it starts until it succeeds, so logins that arrive at once
	// cannot pass the limit while their passwords are being checked.
	LoginFailures int
	LoginWindow   time.Duration
	// MaxVerifying bounds the password verifications running at once, all
	// users together, and VerifyQueue the logins waiting for one; a login
	// beyond both is answered 503 with Retry-After at once. After each
	// verification its slot rests three times as long as it took, so that
	// a flood of guesses takes at most a quarter of MaxVerifying CPUs from
	// the sessions running. A login whose password was verified recently
	// costs no hash and does not wait. Defaults GOMAXPROCS/4 (at least 1)
	// and 4 per MaxVerifying.
	MaxVerifying, VerifyQueue int
}

// Server serves tunnel sessions. It is an http.Handler.
type Server struct {
	cfg      Config
	log      *slog.Logger
	limiter  *FailureLimiter  // failed logins per source address
	byUser   *FailureLimiter  // failed logins per user name, against distributed guessing
	verify   *verifyGate      // password verifications of all users together
	refusals *refusalLog      // refused logins, logged a few at a time
	http     *httpconn.Server // the connections of the HTTP transports

	binds   bindTable
	metrics *Metrics
	parking *relay.Parking // idle stream directions wait here, not on goroutines
	auth    atomic.Pointer[authHolder]

	active atomic.Int64 // streams carrying data (not reverse-bind leases)

	mu            sync.Mutex
	sessions      map[*session]struct{}
	reserved      map[string]int // sessions admitted but not yet tracked, by user
	reservedTotal int
	closed        bool
	wg            sync.WaitGroup
}

var _ http.Handler = (*Server)(nil)

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Auth == nil {
		return nil, errors.New("server: an authenticator is required")
	}
	if cfg.Path == "" {
		cfg.Path = "/"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.Dialer == nil {
		cfg.Dialer = &net.Dialer{Timeout: cfg.DialTimeout, Control: guardAddresses(cfg.AllowLinkLocal, cfg.Forbidden)}
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 10000
	}
	if cfg.MaxSessionsPerUser <= 0 {
		cfg.MaxSessionsPerUser = 100
	}
	if cfg.MaxStreamsPerSession <= 0 {
		cfg.MaxStreamsPerSession = 16384
	}
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = 10 * time.Second
	}
	if cfg.LoginFailures <= 0 {
		cfg.LoginFailures = 10
	}
	if cfg.LoginWindow <= 0 {
		cfg.LoginWindow = time.Minute
	}
	if cfg.MaxVerifying <= 0 {
		cfg.MaxVerifying = defaultMaxVerifying()
	}
	if cfg.VerifyQueue <= 0 {
		cfg.VerifyQueue = verifyQueuePerSlot * cfg.MaxVerifying
	}
	if cfg.HTTP.MaxConns <= 0 {
		cfg.HTTP.MaxConns = cfg.MaxSessions
	}
	s := &Server{
		cfg:      cfg,
		http:     httpconn.NewServer(cfg.HTTP),
		log:      cfg.Logger,
		limiter:  NewFailureLimiter(cfg.LoginFailures, cfg.LoginWindow),
		byUser:   NewFailureLimiter(3*cfg.LoginFailures, cfg.LoginWindow),
		verify:   newVerifyGate(cfg.MaxVerifying, cfg.VerifyQueue),
		refusals: newRefusalLog(cfg.Logger),
		sessions: make(map[*session]struct{}),
		reserved: make(map[string]int),
		binds:    bindTable{m: make(map[string]*bindLease)},
		metrics:  cfg.Metrics,
	}
	var mc mux.Config
	if cfg.Mux != nil {
		mc = *cfg.Mux
	}
	s.parking = relay.NewParking(mc.CopyBuffer)
	s.cfg.Mux = &mc
	s.auth.Store(&authHolder{cfg.Auth})
	return s, nil
}

// ServeHTTP authenticates a tunnel request, answers it with the
// connection the session runs on (a WebSocket upgrade, or an HTTP
// transport's opening), then serves the session until it ends. Requests
// that are not a tunnel's get a plain 404 that does not name the
// software.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.URL.Path == s.cfg.Path {
		_, opening := httpconn.Opening(r)
		switch {
		case mux.LostUpgrade(r) && !s.isClosed():
			s.answerLostUpgrade(w, r)
			return
		case isUpgrade(r):
			s.open(w, r, start, webSocket)
			return
		case opening && r.Header.Get(httpconn.ProtocolHeader) != mux.Subprotocol:
			http.Error(w, "wire version mismatch: this server speaks "+mux.Subprotocol+"; upgrade the client", http.StatusBadRequest)
			return
		case opening:
			s.open(w, r, start, carrier{name: r.Header.Get(httpconn.TransportHeader), accept: s.http.Accept, detached: true})
			return
		case httpconn.Following(r):
			if s.http.Serve(w, r) {
				return
			}
			// A token the server does not know costs what a guessed
			// password does, and is then answered as any other request.
			if !s.guess(w, r) {
				return
			}
		}
	}
	if s.cfg.Backend != nil {
		s.cfg.Backend.ServeHTTP(w, r)
		return
	}
	http.NotFound(w, r)
}

// carrier is what a session's bytes travel in: its accept answers the
// request that opens the session and returns the connection. A detached
// carrier's connection outlives that request, whose answer is complete
// when accept returns: the session then runs on a goroutine of its own.
type carrier struct {
	name     string
	accept   func(http.ResponseWriter, *http.Request) (net.Conn, error)
	detached bool
}

var webSocket = carrier{name: "websocket", accept: mux.AcceptWebSocket}

// then runs f, what follows the carrier's accept, as the carrier needs.
func (car carrier) then(f func()) {
	if car.detached {
		go f()
		return
	}
	f()
}

// open serves a request that opens a session over car.
func (s *Server) open(w http.ResponseWriter, r *http.Request, start time.Time, car carrier) {
	if s.isClosed() {
		http.Error(w, "server is shutting down", http.StatusServiceUnavailable)
		return
	}
	if r.Header.Get(inner.Header) != "" || r.Header.Get(inner.BindingHeader) != "" {
		s.serveUnauthenticated(w, r, start, car)
		return
	}
	source := s.sourceAddr(r)
	user, ok := s.login(w, r, source)
	if !ok {
		return
	}
	if err := s.admit(user.Name); err != nil {
		if s.refusals.note("session_limit", source) {
			s.log.Warn("session refused", "user", user.Name, "source", source, "err", err)
		}
		w.Header().Set("Retry-After", "30")
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	conn, err := car.accept(w, r)
	if err != nil {
		s.unreserve(user.Name)
		s.log.Warn("upgrade failed", "user", user.Name, "source", source, "transport", car.name, "err", err)
		return
	}
	car.then(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.HeaderTimeout)
		err := httpconn.Established(ctx, conn)
		cancel()
		if err != nil {
			s.unreserve(user.Name)
			conn.Close()
			s.log.Debug("the client left its connection before the session started", "user", user.Name, "source", source, "transport", car.name, "err", err)
			return
		}
		ysess, err := mux.Server(conn, s.cfg.Mux)
		if err != nil {
			s.unreserve(user.Name)
			s.log.Warn("session failed to start", "user", user.Name, "source", source, "err", err)
			return
		}
		s.run(ysess, user, source, start, car.name)
	})
}

// guess counts a request naming an HTTP transport connection the server
// does not know against its source address, as a failed login, and
// reports whether it may be answered; if not, it was answered 429.
func (s *Server) guess(w http.ResponseWriter, r *http.Request) bool {
	source := s.sourceAddr(r)
	if _, ok := s.beginAttempt(w, source); !ok {
		return false
	}
	s.metrics.authFailed("credentials")
	return true
}

// run serves ysess, a session of user admitted (reserved) by admit,
// until it ends.
func (s *Server) run(ysess *mux.Session, user *User, source string, start time.Time, carrier string) {
	sess := s.newSession(ysess, user, source, carrier)
	tracked := s.track(sess)
	s.unreserve(user.Name)
	if !tracked {
		ysess.Close()
		return
	}
	defer s.untrack(sess)
	s.metrics.sessionOpened(time.Since(start).Seconds())
	defer s.metrics.sessionClosed()
	s.serveSession(sess)
}

// answerLostUpgrade answers a tunnel request that reached the server
// without its upgrade headers: once its credentials pass, so that the
// answer tells nothing to a peer without them, with HTTP 426 and
// mux.UpgradeRemovedHeader naming the Via the request came through, so
// that the client can tell its user that a proxy removed the upgrade
// rather than that the URL is wrong.
//
// A request for an end-to-end session or a channel binding carries no
// credentials: it is answered the same once counted against its source
// address as a failed login, so that probing costs what guessing does.
func (s *Server) answerLostUpgrade(w http.ResponseWriter, r *http.Request) {
	source := s.sourceAddr(r)
	name := ""
	if r.Header.Get(inner.Header) != "" || r.Header.Get(inner.BindingHeader) != "" {
		if _, ok := s.beginAttempt(w, source); !ok {
			return
		}
	} else {
		user, ok := s.login(w, r, source)
		if !ok {
			return
		}
		name = user.Name
	}
	via := r.Header.Get("Via")
	if s.refusals.note("upgrade_removed", source) {
		s.log.Warn("tunnel request arrived without its WebSocket upgrade: a proxy on the way removed it",
			"user", name, "source", source, "via", via)
	}
	if via == "" {
		via = "-"
	}
	w.Header().Set(mux.UpgradeRemovedHeader, via)
	w.Header().Set("Connection", "close")
	http.Error(w, "the tunnel request arrived without its WebSocket upgrade; a proxy between client and server removed it", http.StatusUpgradeRequired)
}

// login checks the request's credentials and returns its user, or
// answers the refusal itself. Each login is counted against its source
// address and its user name when it starts, and given back if it
// succeeds or is refused before its password is checked; only then does
// it wait for the password verification budget, unless its password
// was verified recently.
func (s *Server) login(w http.ResponseWriter, r *http.Request, source string) (*User, bool) {
	bySource, ok := s.beginAttempt(w, source)
	if !ok {
		return nil, false
	}
	name, password, ok := r.BasicAuth()
	if !ok {
		if s.refusals.note("missing", source) {
			s.log.Warn("login failed: no credentials", "source", source)
		}
		s.metrics.authFailed("missing")
		unauthorized(w)
		return nil, false
	}
	user, refused := s.checkLogin(r.Context(), source, name, password, &bySource)
	switch {
	case refused == nil:
		return user, true
	case refused.reason == "rate_limited":
		tooManyFailures(w, refused.retry)
	case refused.reason == "busy":
		w.Header().Set("Retry-After", strconv.Itoa(int((refused.retry+time.Second-1)/time.Second)))
		http.Error(w, "the server is busy checking other logins; retry later", http.StatusServiceUnavailable)
	default:
		unauthorized(w)
	}
	return nil, false
}

// loginRefusal is why checkLogin refused a login: its reason as the
// auth-failure metric names it, and when to retry.
type loginRefusal struct {
	reason string // rate_limited, busy or credentials
	retry  time.Duration
}

// checkLogin checks name and password for a login already counted
// against its source address (bySource): against the name's failures,
// then, unless the password was verified recently, after waiting for the
// password verification budget. It logs and counts a refusal.
func (s *Server) checkLogin(ctx context.Context, source, name, password string, bySource *Attempt) (*User, *loginRefusal) {
	byUser, ok, retry := s.byUser.Begin(name, time.Now())
	if !ok {
		bySource.Forgive()
		if s.refusals.note("rate_limited", source) {
			s.log.Warn("login refused: too many failures for this user", "user", name, "source", source, "retry_after", retry.Round(time.Second))
		}
		s.metrics.authFailed("rate_limited")
		return nil, &loginRefusal{"rate_limited", retry}
	}
	auth := s.auth.Load().Authenticator
	var release func()
	if !verifiedRecently(auth, name, password) {
		if release, retry = s.verify.acquire(ctx); release == nil {
			bySource.Forgive()
			byUser.Forgive()
			if s.refusals.note("busy", source) {
				s.log.Warn("login refused: too many password checks at once", "user", name, "source", source, "retry_after", retry.Round(time.Second))
			}
			s.metrics.authFailed("busy")
			return nil, &loginRefusal{"busy", retry}
		}
	}
	user, err := auth.Authenticate(name, password)
	if release != nil {
		release()
	}
	if err != nil {
		// The failure stays counted, against the source and the name.
		if s.refusals.note("credentials", source) {
			s.log.Warn("login failed", "user", name, "source", source, "err", err)
		}
		s.metrics.authFailed("credentials")
		return nil, &loginRefusal{"credentials", 0}
	}
	// The source's failures are not forgiven, only this login: someone
	// holding one valid account could otherwise reset the count between
	// guesses at others.
	bySource.Forgive()
	s.byUser.Succeed(name)
	return user, nil
}

// beginAttempt counts a login, or a request that costs as much, against
// its source address. A source over its limit is answered 429 here, the
// refusal logged and counted, and beginAttempt reports false.
func (s *Server) beginAttempt(w http.ResponseWriter, source string) (Attempt, bool) {
	a, ok, retry := s.limiter.Begin(source, time.Now())
	if !ok {
		if s.refusals.note("rate_limited", source) {
			s.log.Warn("login refused: too many failures", "source", source, "retry_after", retry.Round(time.Second))
		}
		tooManyFailures(w, retry)
		s.metrics.authFailed("rate_limited")
	}
	return a, ok
}

func tooManyFailures(w http.ResponseWriter, retry time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int(retry.Seconds())+1))
	http.Error(w, "too many failed logins; retry later", http.StatusTooManyRequests)
}

func unauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Basic realm="tunnel"`)
	http.Error(w, "invalid username or password", http.StatusUnauthorized)
}

func isUpgrade(r *http.Request) bool {
	return r.Method == http.MethodGet && r.Header.Get("Upgrade") != "" &&
		httpTokenContains(r.Header.Values("Connection"), "upgrade")
}

func httpTokenContains(values []string, token string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// sourceAddr is the client's address: the peer's, or, when the peer is a
// trusted proxy, the rightmost address in X-Forwarded-For that is not
// itself a trusted proxy.
func (s *Server) sourceAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if !s.trusted(host) {
		return host
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		for h := range strings.SplitSeq(v, ",") {
			hops = append(hops, strings.TrimSpace(h))
		}
	}
	for i := len(hops) - 1; i >= 0; i-- {
		if _, err := netip.ParseAddr(hops[i]); err != nil {
			break // garbage: stop believing the chain here
		}
		if !s.trusted(hops[i]) {
			return hops[i]
		}
	}
	return host
}

func (s *Server) trusted(host string) bool {
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(ip.Unmap()) {
			return true
		}
	}
	return false
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) track(sess *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.sessions[sess] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess)
	s.mu.Unlock()
	s.wg.Done()
}

// Sessions returns the number of live sessions.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Shutdown stops taking sessions, tells every client to open no new
// streams (a yamux GoAway), and waits for the streams in flight to finish
// until ctx ends; then it closes what is left, like Close. It returns
// ctx's error when streams had to be cut.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for sess := range s.sessions {
		sess.GoAway()
	}
	s.mu.Unlock()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var err error
	for s.active.Load() > 0 && err == nil {
		select {
		case <-tick.C:
		case <-ctx.Done():
			err = ctx.Err()
			s.log.Warn("shutdown timeout: cutting streams still open", "streams", s.active.Load())
		}
	}
	s.Close()
	return err
}

// Close ends every session and waits for their streams to finish. New
// sessions are refused afterwards. It is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for sess := range s.sessions {
		sess.Close()
	}
	s.mu.Unlock()
	s.http.Close()
	s.wg.Wait()
	s.refusals.close()
	return s.parking.Close()
}

func newSessionID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// SessionInfo describes a live session, for status pages.
type SessionInfo struct {
	ID      string    `json:"id"`
	User    string    `json:"user"`
	Source  string    `json:"source"`
	Started time.Time `json:"started"`
	Streams int       `json:"streams"`
}

// BindInfo describes a reverse listener.
type BindInfo struct {
	Addr    string `json:"addr"`
	User    string `json:"user"`
	Session string `json:"session"`
}

// Status lists the live sessions and reverse listeners.
func (s *Server) Status() ([]SessionInfo, []BindInfo) {
	s.mu.Lock()
	sessions := make([]SessionInfo, 0, len(s.sessions))
	for sess := range s.sessions {
		sessions = append(sessions, SessionInfo{ID: sess.id, User: sess.name, Source: sess.source,
			Started: sess.start, Streams: sess.NumStreams()})
	}
	s.mu.Unlock()
	s.binds.mu.Lock()
	binds := make([]BindInfo, 0, len(s.binds.m))
	for key, l := range s.binds.m {
		binds = append(binds, BindInfo{Addr: key, User: l.user, Session: l.session})
	}
	s.binds.mu.Unlock()
	slices.SortFunc(sessions, func(a, b SessionInfo) int { return a.Started.Compare(b.Started) })
	slices.SortFunc(binds, func(a, b BindInfo) int { return strings.Compare(a.Addr, b.Addr) })
	return sessions, binds
}

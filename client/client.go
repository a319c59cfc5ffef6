package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/burrowtun/burrow/certs"
	"github.com/burrowtun/burrow/mux"
	"github.com/hashicorp/yamux"
)

// Config configures a Client. Zero fields mean the defaults.
type Config struct {
	// URL of the server's tunnel endpoint, wss://host:port[/path].
	URL string
	// Username and Password are sent with HTTP Basic authentication.
	Username, Password string
	// TLS verifies the server; see certs.ClientConfig. Required for wss.
	TLS *tls.Config
	// Header is added to the upgrade request; a Host entry replaces the
	// Host header.
	Header http.Header
	// Proxy, when set, is the HTTP (CONNECT) or SOCKS5 proxy to reach the
	// server through; see ParseProxyURL and ProxyFromEnvironment.
	Proxy *url.URL
	// Remotes are the forwards to run.
	Remotes []Remote
	// Mux tunes the session; nil means mux's defaults.
	Mux *mux.Config
	// Logger receives connection and stream events. Default: discard.
	Logger *slog.Logger
	// MaxRetryInterval caps the delay between reconnection attempts.
	// Default 30s.
	MaxRetryInterval time.Duration
	// MaxRetryCount is how many consecutive failed attempts are made
	// before Run gives up; negative means no limit. Default unlimited
	// (the zero value means unlimited too; use MaxRetryCount: 0 with
	// NoRetry to fail on the first error).
	MaxRetryCount int
	// NoRetry makes Run return on the first failed connection attempt.
	NoRetry bool
	// DialTimeout bounds one connection attempt. Default 30s.
	DialTimeout time.Duration
	// SOCKSAuth, when set, is required from clients of local SOCKS
	// listeners (an open SOCKS port is a hole in the network).
	SOCKSAuth *mux.SOCKSAuth
	// Stdin and Stdout are the local end of a stdio remote. Default
	// os.Stdin and os.Stdout.
	Stdin  io.Reader
	Stdout io.WriteCloser
	// UDPIdle ends a UDP flow after this long without a datagram.
	UDPIdle time.Duration
	// Listening, when set, is called once for each remote as soon as its
	// local listener is bound, with the address it got (useful with port
	// 0, and for readiness notification).
	Listening func(r Remote, addr net.Addr)
	// Connected, when set, is called each time a session is up and its
	// reverse remotes are bound (for readiness notification).
	Connected func()
	// OpenTimeout bounds how long a forwarded connection waits for the
	// session (while reconnecting) and for the server's answer. Default 30s.
	OpenTimeout time.Duration
}

// Client runs forwards over one session.
type Client struct {
	cfg  Config
	log  *slog.Logger
	http *http.Client

	mu      sync.Mutex
	sess    *yamux.Session
	changed chan struct{} // closed and replaced whenever sess changes
}

// New checks cfg and returns a Client. It does not connect.
func New(cfg Config) (*Client, error) {
	if cfg.URL == "" {
		return nil, errors.New("client: a server URL is required")
	}
	if cfg.Stdin == nil {
		cfg.Stdin = os.Stdin
	}
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxRetryInterval <= 0 {
		cfg.MaxRetryInterval = 30 * time.Second
	}
	if cfg.MaxRetryCount == 0 {
		cfg.MaxRetryCount = -1
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 30 * time.Second
	}
	if cfg.OpenTimeout <= 0 {
		cfg.OpenTimeout = 30 * time.Second
	}
	dialer := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	dial := dialer.DialContext
	if cfg.Proxy != nil {
		dial = (&proxyDialer{proxy: cfg.Proxy, forward: dialer, timeout: cfg.DialTimeout}).DialContext
	}
	transport := &http.Transport{
		// Batch writes under TLS: a WebSocket client writes its masked
		// frames in 4 KiB pieces, each a TLS record and a syscall.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return mux.CoalesceWrites(conn, 0), nil
		},
		TLSClientConfig:     cfg.TLS,
		TLSHandshakeTimeout: cfg.DialTimeout,
		ForceAttemptHTTP2:   false,
	}
	return &Client{
		cfg:     cfg,
		log:     cfg.Logger,
		http:    &http.Client{Transport: transport},
		changed: make(chan struct{}),
	}, nil
}

// Run binds every local listener, then keeps a session to the server
// until ctx is done or reconnecting is given up. It returns nil when ctx
// ends or a stdio remote's connection is over, and an error for a failure
// that retrying cannot fix (rejected credentials, an untrusted
// certificate, a listener that cannot bind, a refused reverse bind).
func (c *Client) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel(nil)

	var closers []io.Closer
	defer func() {
		for _, cl := range closers {
			cl.Close()
		}
	}()
	var serve []func()
	for _, r := range c.cfg.Remotes {
		if r.Reverse {
			continue
		}
		if r.Stdio {
			serve = append(serve, func() {
				c.forwardStdio(ctx, r)
				cancel(errStdioDone)
			})
			continue
		}
		if r.Proto == "udp" {
			pc, err := net.ListenPacket("udp", r.LocalAddr())
			if err != nil {
				return fmt.Errorf("cannot listen on %s/udp for remote %s: %w; pick another local port", r.LocalAddr(), r, err)
			}
			closers = append(closers, pc)
			c.listening(r, pc.LocalAddr())
			ul := &mux.UDPListener{
				Conn: pc.(*net.UDPConn),
				Open: func(ctx context.Context) (mux.Stream, error) {
					return c.open(ctx, mux.Header{Kind: mux.KindUDP, Target: r.RemoteAddr()})
				},
				Idle:   c.cfg.UDPIdle,
				Logger: c.log.With("local", pc.LocalAddr().String(), "remote", r.RemoteAddr()),
			}
			serve = append(serve, func() { ul.Serve(ctx) })
			continue
		}
		l, err := net.Listen("tcp", r.LocalAddr())
		if err != nil {
			return fmt.Errorf("cannot listen on %s for remote %s: %w; pick another local port", r.LocalAddr(), r, err)
		}
		closers = append(closers, l)
		c.listening(r, l.Addr())
		serve = append(serve, func() { c.serveListener(ctx, l, r, &wg) })
	}
	for _, f := range serve {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}
	err := c.connectLoop(ctx)
	if errors.Is(context.Cause(ctx), errStdioDone) {
		return nil
	}
	return err
}

var errStdioDone = errors.New("stdio connection ended")

func (c *Client) listening(r Remote, addr net.Addr) {
	c.log.Info("forward listening", "local", addr.String(), "remote", r.RemoteAddr(), "proto", r.Proto, "socks", r.Socks)
	if c.cfg.Listening != nil {
		c.cfg.Listening(r, addr)
	}
}

func (c *Client) connectLoop(ctx context.Context) error {
	failures := 0
	for {
		start := time.Now()
		sess, err := c.connect(ctx)
		if ctx.Err() != nil {
			if sess != nil {
				sess.Close()
			}
			return nil
		}
		if err != nil {
			if permanent(err) || c.cfg.NoRetry {
				return err
			}
			failures++
			if c.cfg.MaxRetryCount >= 0 && failures > c.cfg.MaxRetryCount {
				return fmt.Errorf("giving up after %d failed connection attempts: %w", failures, err)
			}
			delay := c.backoff(failures, err)
			c.log.Warn("connection failed; retrying", "err", err, "attempt", failures, "retry_in", delay.Round(time.Millisecond))
			if !sleep(ctx, delay) {
				return nil
			}
			continue
		}
		failures = 0
		c.log.Info("connected", "server", c.cfg.URL, "handshake", time.Since(start).Round(time.Millisecond))
		if err := c.serveSession(ctx, sess); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		c.log.Warn("connection lost; reconnecting", "server", c.cfg.URL)
	}
}

func (c *Client) connect(ctx context.Context) (*yamux.Session, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	header := c.cfg.Header.Clone()
	if header == nil {
		header = http.Header{}
	}
	(&http.Request{Header: header}).SetBasicAuth(c.cfg.Username, c.cfg.Password)
	sess, err := mux.Dial(ctx, c.cfg.URL, &mux.DialOptions{
		HTTPClient: c.http,
		Header:     header,
		Host:       header.Get("Host"),
		Config:     c.cfg.Mux,
	})
	if err != nil {
		return nil, c.explain(err)
	}
	return sess, nil
}

// serveSession makes sess the live session: it asks the server for the
// reverse listeners, serves the streams the server opens, and returns when
// the session ends (nil) or a reverse bind is refused (the error).
func (c *Client) serveSession(ctx context.Context, sess *yamux.Session) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	defer sess.Close()
	defer c.setSession(nil)
	for _, r := range c.cfg.Remotes {
		if !r.Reverse {
			continue
		}
		mode := r.Proto
		if r.Socks {
			mode = "socks"
		}
		st, err := mux.Open(sess, mux.Header{Kind: mux.KindBind, Target: mode + ":" + r.LocalAddr()}, c.cfg.OpenTimeout)
		if err != nil {
			var refused *mux.RemoteError
			if errors.As(err, &refused) {
				return fmt.Errorf("server refused reverse remote %s: %w", r, err)
			}
			return nil // the session died: reconnect
		}
		// The bind stream is the lease; it closes with the session.
		defer st.Close()
		c.log.Info("reverse listening on the server", "addr", r.LocalAddr(), "remote", r.RemoteAddr(), "mode", mode)
	}
	c.setSession(sess)
	if c.cfg.Connected != nil {
		c.cfg.Connected()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.serveStream(ctx, st)
			}()
		}
	}()
	select {
	case <-sess.CloseChan():
	case <-ctx.Done():
	}
	return nil
}

// serveStream answers a stream the server opened for a reverse remote.
// The client dials only what its own remotes name: a KindReverseTCP or
// KindReverseUDP stream names the bind address, and the client dials that
// remote's target; a KindTCP stream (from an R:socks listener) is served
// only when an R:socks remote was asked for.
func (c *Client) serveStream(ctx context.Context, st *yamux.Stream) {
	h, err := mux.ReadHeaderTimeout(st, c.cfg.OpenTimeout)
	if err != nil {
		st.Close()
		return
	}
	log := c.log.With("stream", st.StreamID(), "kind", h.Kind.String(), "target", h.Target)
	refuse := func(err error) {
		log.Warn("reverse stream refused", "err", err)
		mux.WriteReply(st, err)
		st.Close()
	}
	dialer := &net.Dialer{Timeout: c.cfg.DialTimeout}
	start := time.Now()
	switch h.Kind {
	case mux.KindReverseTCP, mux.KindReverseUDP:
		proto := "tcp"
		if h.Kind == mux.KindReverseUDP {
			proto = "udp"
		}
		r, ok := c.reverseRemote(h.Target, proto)
		if !ok {
			refuse(mux.Refuse(mux.CodeDenied, "the client has no reverse remote %s/%s", h.Target, proto))
			return
		}
		if proto == "udp" {
			stats, err := mux.ServeUDP(ctx, st, dialer.DialContext, r.RemoteAddr(), c.cfg.UDPIdle, c.cfg.DialTimeout)
			if err != nil {
				log.Warn("reverse stream refused", "err", err)
				return
			}
			log.Info("reverse udp flow closed", "remote", r.RemoteAddr(), "datagrams_out", stats.Sent,
				"datagrams_in", stats.Received, "dropped", stats.Dropped)
			return
		}
		sent, received, err := mux.ServeTCP(ctx, st, dialer.DialContext, r.RemoteAddr(), c.cfg.DialTimeout,
			func() { log.Info("reverse stream opened", "remote", r.RemoteAddr()) })
		if err != nil {
			log.Warn("reverse stream refused", "err", err)
			return
		}
		log.Info("reverse stream closed", "remote", r.RemoteAddr(), "bytes_out", sent, "bytes_in", received,
			"duration", time.Since(start).Round(time.Millisecond))
	case mux.KindTCP:
		if !c.hasReverseSOCKS() {
			refuse(mux.Refuse(mux.CodeDenied, "the client has no R:socks remote"))
			return
		}
		sent, received, err := mux.ServeTCP(ctx, st, dialer.DialContext, h.Target, c.cfg.DialTimeout,
			func() { log.Info("reverse stream opened") })
		if err != nil {
			log.Warn("reverse stream refused", "err", err)
			return
		}
		log.Info("reverse stream closed", "bytes_out", sent, "bytes_in", received,
			"duration", time.Since(start).Round(time.Millisecond))
	default:
		refuse(mux.Refuse(mux.CodeUnsupported, "stream kind %d is not served by the client", h.Kind))
	}
}

func (c *Client) reverseRemote(bind, proto string) (Remote, bool) {
	for _, r := range c.cfg.Remotes {
		if r.Reverse && !r.Socks && r.Proto == proto && r.LocalAddr() == bind {
			return r, true
		}
	}
	return Remote{}, false
}

func (c *Client) hasReverseSOCKS() bool {
	for _, r := range c.cfg.Remotes {
		if r.Reverse && r.Socks {
			return true
		}
	}
	return false
}

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
	case errors.Is(err, http.ErrSchemeMismatch):
		return &permanentError{fmt.Errorf("%s answered in plain HTTP, not TLS; check the port, or put TLS in front of a --tls off server", c.cfg.URL)}
	}
	if explained := certs.Explain(err); explained != err {
		return &permanentError{fmt.Errorf("cannot connect to %s: %w", c.cfg.URL, explained)}
	}
	return err
}

// backoff returns the delay before attempt n: exponential from 250ms,
// capped at MaxRetryInterval, with jitter so that many clients cut off
// together do not return together; at least what a 429 asked for.
func (c *Client) backoff(n int, err error) time.Duration {
	d := c.cfg.MaxRetryInterval
	if n < 20 {
		d = min(250*time.Millisecond<<n, c.cfg.MaxRetryInterval)
	}
	d = d/2 + rand.N(d/2+1)
	var he *mux.HandshakeError
	if errors.As(err, &he) && he.RetryAfter > d {
		d = he.RetryAfter
	}
	return d
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (c *Client) setSession(s *yamux.Session) {
	c.mu.Lock()
	c.sess = s
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// session returns the live session, waiting for one while reconnecting.
func (c *Client) session(ctx context.Context) (*yamux.Session, error) {
	for {
		c.mu.Lock()
		s, changed := c.sess, c.changed
		c.mu.Unlock()
		if s != nil && !s.IsClosed() {
			return s, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("no connection to the server: %w", context.Cause(ctx))
		}
	}
}

// open opens a stream for h on the live session. A session that dies
// under it (the server restarted, say) is not the connection's fault: it
// waits for the next session and tries again until ctx ends.
func (c *Client) open(ctx context.Context, h mux.Header) (*yamux.Stream, error) {
	for {
		sess, err := c.session(ctx)
		if err != nil {
			return nil, err
		}
		st, err := mux.Open(sess, h, c.cfg.OpenTimeout)
		if err == nil {
			return st, nil
		}
		var refused *mux.RemoteError
		if errors.As(err, &refused) || !sess.IsClosed() {
			return nil, err
		}
	}
}

// forwardStdio carries stdin/stdout as one connection to the remote's
// target, over whichever session is live when it starts. It returns when
// the far end has finished sending: the program that reads stdout (ssh,
// for a ProxyCommand) has then all it will get. The copy from stdin is
// not waited for, since a read from a terminal or pipe cannot be
// interrupted; the process exits after a stdio forward.
func (c *Client) forwardStdio(ctx context.Context, r Remote) {
	log := c.log.With("local", "stdio", "remote", r.RemoteAddr())
	st, err := c.open(ctx, mux.Header{Kind: mux.KindTCP, Target: r.RemoteAddr()})
	if err != nil {
		log.Error("stdio forward refused", "err", err)
		return
	}
	stop := context.AfterFunc(ctx, func() { st.Close() })
	defer stop()
	var sent atomic.Int64
	go func() {
		n, _ := io.Copy(st, c.cfg.Stdin)
		sent.Store(n)
		st.Close() // half-close: the target sees EOF
	}()
	received, _ := io.Copy(c.cfg.Stdout, st)
	c.cfg.Stdout.Close()
	log.Info("stdio forward closed", "bytes_out", sent.Load(), "bytes_in", received)
}

func (c *Client) serveListener(ctx context.Context, l net.Listener, r Remote, wg *sync.WaitGroup) {
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				c.log.Error("listener failed", "local", l.Addr().String(), "err", err)
			}
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.forward(ctx, conn, r)
		}()
	}
}

func (c *Client) forward(ctx context.Context, conn net.Conn, r Remote) {
	log := c.log.With("local", conn.LocalAddr().String(), "remote", r.RemoteAddr(), "peer", conn.RemoteAddr().String())
	// Until the stream is open, closing conn is how ctx's end reaches us.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	target := r.RemoteAddr()
	if r.Socks {
		var err error
		conn.SetDeadline(time.Now().Add(c.cfg.OpenTimeout))
		target, err = mux.SOCKSHandshake(conn, c.cfg.SOCKSAuth)
		conn.SetDeadline(time.Time{})
		if err != nil {
			log.Warn("socks request failed", "err", err)
			conn.Close()
			return
		}
		log = log.With("target", target)
	}
	openCtx, cancel := context.WithTimeoutCause(ctx, c.cfg.OpenTimeout, errors.New("timed out waiting for the server"))
	defer cancel()
	st, err := c.open(openCtx, mux.Header{Kind: mux.KindTCP, Target: target})
	if r.Socks {
		mux.SOCKSReply(conn, err)
	}
	if err != nil {
		log.Warn("forward refused", "err", err)
		conn.Close()
		return
	}
	start := time.Now()
	log.Info("stream opened", "stream", st.StreamID())
	sent, received := mux.Pipe(conn, st)
	log.Info("stream closed", "stream", st.StreamID(), "bytes_out", sent, "bytes_in", received,
		"duration", time.Since(start).Round(time.Millisecond))
}

// Session is a connection to the server with no forwards, for commands
// that only open streams of their own (file transfers).
type Session struct {
	sess    *yamux.Session
	timeout time.Duration
}

// Connect opens one session to the server described by cfg (whose
// Remotes are ignored), without retrying.
func Connect(ctx context.Context, cfg Config) (*Session, error) {
	cfg.Remotes = nil
	c, err := New(cfg)
	if err != nil {
		return nil, err
	}
	sess, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	return &Session{sess: sess, timeout: c.cfg.OpenTimeout}, nil
}

// OpenFile opens a file-transfer stream (mux.KindFile) to the server.
func (s *Session) OpenFile(ctx context.Context) (*yamux.Stream, error) {
	return mux.Open(s.sess, mux.Header{Kind: mux.KindFile}, s.timeout)
}

// Close ends the session.
func (s *Session) Close() error { return s.sess.Close() }

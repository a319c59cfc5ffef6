package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/burrowtun/burrow/relay"
	"github.com/burrowtun/burrow/socks"
	"github.com/burrowtun/burrow/udp"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/burrowtun/burrow/mux"
)

// Config configures a Client. Zero fields mean the defaults.
type Config struct {
	// URL of the server's tunnel endpoint, wss://host:port[/path].
	URL string
	// Username and Password are sent with HTTP Basic authentication.
	Username, Password string
	// TLS verifies the server; see certs.ClientConfig. Nil means the
	// system's roots.
	TLS *tls.Config
	// OuterTLS, when set, verifies the TLS connection to the server in
	// place of TLS, which then verifies only the end-to-end layer (package
	// inner): a client that records the keys of new servers
	// (certs.KnownServers.AcceptNew) records them from inside that layer
	// alone, where no TLS-inspecting proxy can show its own.
	OuterTLS *tls.Config
	// Inspection says what to do when the TLS connection is not the
	// server's but a TLS-inspecting proxy's. Default InspectionE2E.
	Inspection Inspection
	// Transport is what the session travels in. Default TransportAuto.
	Transport Transport
	// TransportMemory, when set, is the file where TransportAuto records,
	// per server and proxy, a transport other than WebSocket that got
	// through, so that the next process on the same path does not probe
	// again (for a day). It holds no secrets.
	TransportMemory string
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
	SOCKSAuth *socks.Auth
	// Stdin and Stdout are the local end of a stdio remote. Default
	// os.Stdin and os.Stdout.
	Stdin  io.Reader
	Stdout io.WriteCloser
	// UDPIdle ends a UDP flow after this long without a datagram.
	UDPIdle time.Duration
	// UDPMaxFlows bounds the flows of one local UDP listener.
	UDPMaxFlows int
	// Listening, when set, is called once for each remote as soon as its
	// local listener is bound, with the address it got (useful with port
	// 0, and for readiness notification).
	Listening func(r Remote, addr net.Addr)
	// Connected, when set, is called each time a session is up and its
	// reverse remotes are bound (for readiness notification).
	Connected func()
	// Control, when set, is the path of a Unix socket (mode 0600) through
	// which local commands open file-transfer streams on this client's
	// session (burrow send/fetch/ls --control).
	Control string
	// OpenTimeout bounds how long a forwarded connection waits for the
	// session (while reconnecting) and for the server's answer. Default 30s.
	OpenTimeout time.Duration
}

// Client runs forwards over one session.
type Client struct {
	cfg Config
	log *slog.Logger
	// dial opens a TCP connection to the server, through the proxy if any.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// tls and outer are cfg.TLS and cfg.OuterTLS (tls when unset), with
	// the server name the URL gives when they name none.
	tls, outer *tls.Config

	mu      sync.Mutex
	worked  Transport // on TransportAuto: the transport that got through last
	sess    *mux.Session
	changed chan struct{} // closed and replaced whenever sess changes

	// parking holds the idle directions of Run's forwards (nil outside
	// Run: a Connect session forwards nothing).
	parking *relay.Parking
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
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Hostname() == "" {
		return nil, fmt.Errorf("client: server URL %q has no host", cfg.URL)
	}
	dialer := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	dial := dialer.DialContext
	if cfg.Proxy != nil {
		dial = (&proxyDialer{proxy: cfg.Proxy, forward: dialer, timeout: cfg.DialTimeout}).DialContext
	}
	named := func(c *tls.Config) *tls.Config {
		if c == nil {
			c = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		c = c.Clone()
		if c.ServerName == "" {
			c.ServerName = u.Hostname()
		}
		c.NextProtos = []string{"http/1.1"} // the upgrade does not work over HTTP/2
		return c
	}
	outer := cfg.OuterTLS
	if outer == nil {
		outer = cfg.TLS
	}
	return &Client{
		cfg:     cfg,
		log:     cfg.Logger,
		dial:    dial,
		tls:     named(cfg.TLS),
		outer:   named(outer),
		changed: make(chan struct{}),
	}, nil
}

// copyBuffer is the Mux configuration's CopyBuffer (0: mux's default).
func (cfg *Config) copyBuffer() int {
	if cfg.Mux == nil {
		return 0
	}
	return cfg.Mux.CopyBuffer
}

// Run binds every local listener, then keeps a session to the server
// until ctx is done or reconnecting is given up. It returns nil when ctx
// ends or a stdio remote's connection is over, and an error for a failure
// that retrying cannot fix (rejected credentials, an untrusted
// certificate, a listener that cannot bind, a refused reverse bind).
func (c *Client) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	c.parking = relay.NewParking(c.cfg.copyBuffer())
	defer c.parking.Close() // after every forward has ended (wg)
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
	var stdioErr error
	for _, r := range c.cfg.Remotes {
		if r.Reverse {
			continue
		}
		if r.Stdio {
			serve = append(serve, func() {
				stdioErr = c.forwardStdio(ctx, r)
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
			ul := &udp.Listener{
				Conn: pc.(*net.UDPConn),
				Open: func(ctx context.Context) (net.Conn, error) {
					return c.open(ctx, mux.Header{Kind: mux.KindUDP, Target: r.RemoteAddr()})
				},
				Idle:     c.cfg.UDPIdle,
				MaxFlows: c.cfg.UDPMaxFlows,
				Logger:   c.log.With("local", pc.LocalAddr().String(), "remote", r.RemoteAddr()),
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
	if c.cfg.Control != "" {
		l, err := listenControl(c.cfg.Control)
		if err != nil {
			return err
		}
		closers = append(closers, l)
		defer os.Remove(c.cfg.Control)
		serve = append(serve, func() { c.serveControl(ctx, l, &wg) })
	}
	for _, f := range serve {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}
	err := c.connectLoop(ctx)
	cancel(nil) // a no-op if the stdio forward already ended the run
	wg.Wait()   // stdioErr is written by the stdio goroutine
	if errors.Is(context.Cause(ctx), errStdioDone) {
		if stdioErr != nil {
			return stdioErr
		}
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
		c.log.Info("connected", "server", c.cfg.URL, "transport", c.transport().String(), "handshake", time.Since(start).Round(time.Millisecond))
		if err := c.serveSession(ctx, sess); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		c.log.Warn("connection lost; reconnecting", "server", c.cfg.URL)
	}
}

// upgrade opens the connection over t with the credentials, starting on
// conn, a TLS connection the client trusts, and starts the session on it.
func (c *Client) upgrade(ctx context.Context, conn *tls.Conn, t Transport) (*mux.Session, error) {
	header := c.cfg.Header.Clone()
	if header == nil {
		header = http.Header{}
	}
	(&http.Request{Header: header}).SetBasicAuth(c.cfg.Username, c.cfg.Password)
	carried, _, err := c.carry(ctx, conn, t, header)
	if err != nil {
		return nil, c.explain(err)
	}
	return mux.Client(carried, c.muxConfig())
}

// transport is the transport of the last session opened.
func (c *Client) transport() Transport {
	if c.cfg.Transport != TransportAuto {
		return c.cfg.Transport
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.worked
}

// muxConfig is a copy of the session configuration.
func (c *Client) muxConfig() *mux.Config {
	var mc mux.Config
	if c.cfg.Mux != nil {
		mc = *c.cfg.Mux
	}
	return &mc
}

// serveSession makes sess the live session: it asks the server for the
// reverse listeners, serves the streams the server opens, and returns when
// the session ends (nil) or a reverse bind is refused (the error).
func (c *Client) serveSession(ctx context.Context, sess *mux.Session) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	// The streams the server opened end with the session: their targets'
	// connections are closed rather than left half-closed, which a target
	// may keep open, holding the reconnection back (wg).
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
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
		if r.Socks {
			if err := socks.WriteBindAuth(st, c.cfg.SOCKSAuth); err != nil {
				return nil // the session died: reconnect
			}
		}
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
			go c.serveStream(ctx, st, wg.Done)
		}
	}()
	select {
	case <-sess.CloseChan():
	case <-ctx.Done():
	}
	return nil
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

func (c *Client) setSession(s *mux.Session) {
	c.mu.Lock()
	c.sess = s
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// session returns the live session, waiting for one while reconnecting.
func (c *Client) session(ctx context.Context) (*mux.Session, error) {
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
func (c *Client) open(ctx context.Context, h mux.Header) (*mux.Stream, error) {
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

// Session is a connection to the server with no forwards, for commands
// that only open streams of their own (file transfers).
type Session struct {
	sess    *mux.Session
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
func (s *Session) OpenFile(ctx context.Context) (*mux.Stream, error) {
	return mux.Open(s.sess, mux.Header{Kind: mux.KindFile}, s.timeout)
}

// Close ends the session.
func (s *Session) Close() error { return s.sess.Close() }

package mux

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// Subprotocol is the WebSocket subprotocol that names this wire version.
// A peer that does not offer it is refused before the upgrade.
const Subprotocol = "burrow.v1"

// Defaults for Config. The stream window is what bounds one stream's
// throughput on a long link. yamux grants credit only once half the window
// has been read, so a sender can count on about three quarters of it: 16
// MiB keeps a single stream near 1 Gbit/s up to about 100 ms of round trip
// (8 MiB reached 70-75% of a 1 Gbit/s, 50 ms link in make bench, 16 MiB
// 90-100%), while bounding what one slow reader can make the peer buffer.
const (
	DefaultStreamWindow      = 16 << 20
	DefaultKeepAliveInterval = 15 * time.Second
	DefaultKeepAliveTimeout  = 15 * time.Second
	DefaultAcceptBacklog     = 256
	// DefaultCopyBuffer is a busy spliced direction's read, and so the
	// largest yamux frame it sends. Each frame is one WebSocket message
	// and one write to the socket, written from yamux's send loop:
	// against 64 KiB, 256 KiB cut the syscalls per MiB of a one-stream
	// upload through the binaries by nearly a third, the context
	// switches by about two fifths and the CPU per GiB by about a
	// seventh (make bench's iperf3 upload, paired runs). A pool holds it
	// only while data flows; a stream's receive window is what bounds the
	// memory a stream may cost. yamux's send loop keeps a buffer as large
	// as the largest frame its session has sent, for the session's life:
	// MaxCopyBuffer bounds that, and MinCopyBuffer the syscalls per byte.
	DefaultCopyBuffer = 256 << 10
	MinCopyBuffer     = 16 << 10
	MaxCopyBuffer     = 1 << 20
	// DefaultMaxBatch is what a corkConn holds back for one message:
	// MaxBatch of DefaultCopyBuffer.
	DefaultMaxBatch = 2 * DefaultCopyBuffer
	minStreamWindow = 256 << 10

	// sendTimeout bounds how long yamux lets a frame wait to be sent.
	// It is only a safety valve: on a slow link a frame may wait behind
	// megabytes of queued data, and a peer that stops sending is caught
	// by keepAlive, which closes the session and so every send.
	sendTimeout = 5 * time.Minute
	// maxPingsInFlight bounds the pings waiting for an answer, and so
	// keepAlive's goroutines, on a link where answers take many
	// intervals to come back.
	maxPingsInFlight = 64
)

// MaxBatch is what CoalesceWrites should hold back for one message when
// splices read copyBuffer bytes at a time (0: DefaultCopyBuffer): a whole
// frame of that size with its WebSocket and TLS framing, so that it
// leaves in one write.
func MaxBatch(copyBuffer int) int { return 2 * clampCopyBuffer(copyBuffer) }

// clampCopyBuffer returns n within MinCopyBuffer and MaxCopyBuffer, or
// DefaultCopyBuffer for 0.
func clampCopyBuffer(n int) int {
	if n == 0 {
		return DefaultCopyBuffer
	}
	return min(max(n, MinCopyBuffer), MaxCopyBuffer)
}

// Config tunes a session. The zero value, or nil, means the defaults.
type Config struct {
	// StreamWindow is the largest receive window of a stream in bytes
	// (at least 256 KiB). Default DefaultStreamWindow.
	StreamWindow uint32
	// KeepAliveInterval is how often the peer is pinged.
	KeepAliveInterval time.Duration
	// KeepAliveTimeout is how long past KeepAliveInterval the peer may
	// stay silent before the session is declared dead: a silent peer is
	// noticed within about KeepAliveInterval+KeepAliveTimeout. Anything
	// received from the peer proves it alive, not only the answer to a
	// ping, which may wait behind the data queued before it.
	KeepAliveTimeout time.Duration
	// AcceptBacklog bounds the streams opened by the peer and not yet
	// accepted.
	AcceptBacklog int
	// Logger receives yamux's own diagnostics at debug level.
	Logger *slog.Logger
	// CopyBuffer is not the session's: it is what its owner passes to
	// relay.NewParking and, through MaxBatch, to CoalesceWrites, kept
	// here with the rest of the tuning. 0 means DefaultCopyBuffer.
	CopyBuffer int
}

func (c *Config) withDefaults() Config {
	var o Config
	if c != nil {
		o = *c
	}
	if o.StreamWindow == 0 {
		o.StreamWindow = DefaultStreamWindow
	}
	if o.KeepAliveInterval <= 0 {
		o.KeepAliveInterval = DefaultKeepAliveInterval
	}
	if o.KeepAliveTimeout <= 0 {
		o.KeepAliveTimeout = DefaultKeepAliveTimeout
	}
	if o.AcceptBacklog <= 0 {
		o.AcceptBacklog = DefaultAcceptBacklog
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

func (c Config) yamux() (*yamux.Config, error) {
	if c.StreamWindow < minStreamWindow {
		return nil, fmt.Errorf("stream window %d is below the minimum of %d bytes", c.StreamWindow, minStreamWindow)
	}
	y := yamux.DefaultConfig()
	y.AcceptBacklog = c.AcceptBacklog
	// yamux's keepalive wants each ping answered within its timeout,
	// which a live peer cannot do when the ping waits behind seconds of
	// data queued on a slow link; keepAlive runs instead.
	y.EnableKeepAlive = false
	y.KeepAliveInterval = c.KeepAliveInterval
	y.ConnectionWriteTimeout = sendTimeout
	y.MaxStreamWindowSize = c.StreamWindow
	// A stream the peer has not acknowledged in this long ends the whole
	// session in yamux: keep it well above any stall a busy peer may have.
	y.StreamOpenTimeout = 75 * time.Second
	y.StreamCloseTimeout = time.Minute
	y.LogOutput = nil
	y.Logger = yamuxLogger{c.Logger}
	return y, yamux.VerifyConfig(y)
}

// yamuxLogger sends yamux's Printf-style diagnostics to slog at debug level:
// they describe peers going away, which the caller already reports.
type yamuxLogger struct{ l *slog.Logger }

func (y yamuxLogger) Print(v ...any) { y.l.Debug(strings.TrimSpace(fmt.Sprint(v...))) }
func (y yamuxLogger) Printf(format string, v ...any) {
	y.l.Debug(strings.TrimSpace(fmt.Sprintf(format, v...)))
}
func (y yamuxLogger) Println(v ...any) { y.l.Debug(strings.TrimSpace(fmt.Sprintln(v...))) }

// DialOptions says how to reach the server.
type DialOptions struct {
	// HTTPClient carries the upgrade request: its transport holds the TLS
	// configuration and any proxy. Nil means http.DefaultClient.
	HTTPClient *http.Client
	// Header is sent with the upgrade request (credentials, for instance).
	Header http.Header
	// Host overrides the Host header.
	Host string
	// Config tunes the session.
	Config *Config
}

// ErrNotNegotiated is returned by Dial when the server upgraded the
// connection without agreeing to this wire version: it is not a burrow
// server, or one of an incompatible version.
var ErrNotNegotiated = errors.New("server did not agree to wire version " + Subprotocol)

// HandshakeError is a refused upgrade: the server answered with an HTTP
// status instead of switching protocols.
type HandshakeError struct {
	StatusCode int
	// Message is the start of the response body, trimmed to one line.
	Message string
	// RetryAfter is the server's Retry-After, when it sent one.
	RetryAfter time.Duration
	// UpgradeRemoved says the server received the request without its
	// upgrade headers (see UpgradeRemovedHeader): a party on the way,
	// usually a proxy, removed them. Via is the Via header the request
	// reached the server with, naming that party, if it said.
	UpgradeRemoved bool
	Via            string
}

// UpgradeRemovedHeader is set by a server on its answer (HTTP 426) to an
// authenticated tunnel request that reached it as a plain GET: it carries
// this wire version's subprotocol and WebSocket key but no Upgrade and
// Connection: upgrade, which a proxy that does not pass WebSocket removes.
// Its value is the request's Via header, or "-" when there was none.
const UpgradeRemovedHeader = "Burrow-Upgrade-Removed"

// LostUpgrade reports whether r is a tunnel request of this wire version
// whose upgrade was removed on the way: a GET that names Subprotocol and
// has a WebSocket key, without the upgrade itself.
func LostUpgrade(r *http.Request) bool {
	if r.Method != http.MethodGet || r.Header.Get("Sec-WebSocket-Key") == "" || r.Header.Get("Upgrade") != "" {
		return false
	}
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(p) == Subprotocol {
				return true
			}
		}
	}
	return false
}

func (e *HandshakeError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("server refused the tunnel (HTTP %d)", e.StatusCode)
	}
	return fmt.Sprintf("server refused the tunnel (HTTP %d): %s", e.StatusCode, e.Message)
}

// Dial opens the WebSocket at url and starts the client end of a session.
// The session owns the connection; closing it closes the connection.
func Dial(ctx context.Context, url string, opts *DialOptions) (*Session, error) {
	var cfg *Config
	if opts != nil {
		cfg = opts.Config
	}
	if _, err := cfg.withDefaults().yamux(); err != nil {
		return nil, err
	}
	conn, _, err := DialWebSocket(ctx, url, opts)
	if err != nil {
		return nil, err
	}
	return Client(conn, cfg)
}

// upgradeRecorder remembers the connection a WebSocket upgrade leaves open
// (the body of the 101 response), so that wsConn can close it when
// coder/websocket cannot, and the network connection under it; it wraps
// the body in a corkBody, so that wsConn can cork both.
type upgradeRecorder struct {
	base http.RoundTripper
	raw  io.Closer
	conn net.Conn
}

func (u *upgradeRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { u.conn = info.Conn }}
	r = r.WithContext(httptrace.WithClientTrace(r.Context(), trace))
	resp, err := u.base.RoundTrip(r)
	if err == nil && resp.StatusCode == http.StatusSwitchingProtocols {
		// Only over TLS, whose records it fills: without TLS there
		// are no records, and a corkConn (CoalesceWrites) joins the
		// pieces into one write without another copy.
		if rwc, ok := resp.Body.(io.ReadWriteCloser); ok && resp.TLS != nil {
			resp.Body = newCorkBody(rwc)
		}
		u.raw = resp.Body
	}
	return resp, err
}

// hijackRecorder remembers the connection websocket.Accept hijacks, for
// the same reason.
type hijackRecorder struct {
	http.ResponseWriter
	raw net.Conn
}

func (h *hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	h.raw = c
	return c, brw, err
}

func (h *hijackRecorder) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// canHijack reports whether w, or a writer it wraps, is an http.Hijacker,
// as websocket.Accept looks for one.
func canHijack(w http.ResponseWriter) bool {
	for {
		switch t := w.(type) {
		case http.Hijacker:
			return true
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return false
		}
	}
}

// startSession starts a yamux session on conn with its keepalive.
func startSession(start func(io.ReadWriteCloser, *yamux.Config) (*yamux.Session, error), conn link, ycfg *yamux.Config, cfg Config) (*Session, error) {
	sess, err := start(conn, ycfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if ws, ok := conn.(*wsConn); ok {
		ws.setQueue(sess.SendQueueLen)
	}
	go keepAlive(sess, conn, cfg.KeepAliveInterval, cfg.KeepAliveTimeout, cfg.Logger)
	return &Session{ys: sess, watch: conn.frames()}, nil
}

// keepAlive pings the peer every interval and ends the session once
// nothing at all has arrived from it for interval+timeout, aborting the
// connection rather than waiting on a peer that no longer answers. It
// returns when the session ends.
//
// Any byte counts as proof of life. yamux's own keepalive wants each ping
// answered within the timeout, but on a slow or congested link a ping
// waits behind the data queued before it, and busy sessions that were
// alive were declared dead. Both ends ping every interval whatever they
// receive, so that a peer only receiving a bulk transfer, which sends
// nothing else until its window needs updating, still hears from this end.
func keepAlive(sess *yamux.Session, conn link, interval, timeout time.Duration, log *slog.Logger) {
	tick := time.NewTicker(max(min(interval, timeout)/4, time.Millisecond))
	defer tick.Stop()
	var pinging atomic.Int32 // pings waiting for their answer
	reads, heard, pinged := conn.readCount(), time.Now(), time.Now()
	for {
		select {
		case <-sess.CloseChan():
			return
		case <-tick.C:
		}
		now := time.Now()
		if n := conn.readCount(); n != reads {
			reads, heard = n, now
		} else if silent := now.Sub(heard); silent > interval+timeout {
			log.Debug("keepalive: nothing from the peer; closing the session", "silent", silent.Round(time.Millisecond))
			conn.abort()
			sess.Close()
			return
		}
		// A ping is sent every interval even while earlier ones wait for
		// their answers behind queued data: the peer may hear nothing
		// else from this end. Ping waits for its answer or the end of the
		// session; what matters here is only that the peer hears a ping.
		if now.Sub(pinged) >= interval && pinging.Load() < maxPingsInFlight {
			pinged = now
			pinging.Add(1)
			go func() {
				defer pinging.Add(-1)
				sess.Ping()
			}()
		}
	}
}

// Refusal is the *HandshakeError of resp, a server's refusal of a tunnel
// request over any transport. It reads and closes resp's body.
func Refusal(resp *http.Response) error { return handshakeError(resp) }

func handshakeError(resp *http.Response) error {
	e := &HandshakeError{StatusCode: resp.StatusCode}
	if resp.Body != nil {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		msg := strings.TrimSpace(string(body))
		if i := strings.IndexAny(msg, "\r\n"); i >= 0 {
			msg = strings.TrimSpace(msg[:i])
		}
		if strings.HasPrefix(msg, "<") {
			msg = "" // an HTML error page says nothing a status line does not
		}
		e.Message = msg
	}
	if via := resp.Header.Get(UpgradeRemovedHeader); via != "" {
		e.UpgradeRemoved = true
		if via != "-" {
			e.Via = via
		}
	}
	if s := resp.Header.Get("Retry-After"); s != "" {
		var secs int
		if _, err := fmt.Sscan(s, &secs); err == nil && secs > 0 {
			e.RetryAfter = time.Duration(secs) * time.Second
		}
	}
	return e
}

// ErrWrongVersion is returned by Accept when the client does not speak
// this wire version; Accept has already answered it with HTTP 400.
var ErrWrongVersion = errors.New("client does not speak wire version " + Subprotocol)

// Accept upgrades r to a WebSocket and starts the server end of a session.
// The caller authenticates the request first. On error Accept has already
// written an HTTP response.
func Accept(w http.ResponseWriter, r *http.Request, cfg *Config) (*Session, error) {
	if _, err := cfg.withDefaults().yamux(); err != nil {
		http.Error(w, "server misconfigured", http.StatusInternalServerError)
		return nil, err
	}
	conn, err := AcceptWebSocket(w, r)
	if err != nil {
		return nil, err
	}
	return Server(conn, cfg)
}

func offersSubprotocol(r *http.Request) bool {
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(p) == Subprotocol {
				return true
			}
		}
	}
	return false
}

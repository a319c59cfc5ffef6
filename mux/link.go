package mux

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"
)

// link is the connection a session's yamux runs on, as keepAlive and the
// frame watch need it: a wsConn, or a watchedConn around any other.
type link interface {
	net.Conn
	readCount() uint64
	frames() *frameWatch
	abort()
}

func (c *wsConn) readCount() uint64   { return c.reads.Load() }
func (c *wsConn) frames() *frameWatch { return &c.watch }

// watchedConn is a link over a connection that is not a WebSocket of its
// own: the inner connection of an end-to-end session (package inner),
// which runs inside one, or an HTTP transport. Its Read keeps to one yamux
// frame at a time, as wsConn's does, so that the frame watch works.
type watchedConn struct {
	net.Conn
	reads     atomic.Uint64
	watch     frameWatch
	abortOnce sync.Once
}

func (c *watchedConn) Read(p []byte) (int, error) {
	p = c.watch.limit(p[:min(len(p), readChunk)])
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.reads.Add(1)
	}
	c.watch.advance(p[:n])
	if err != nil {
		c.watch.close()
	}
	return n, err
}

func (c *watchedConn) Close() error {
	c.watch.close()
	return c.Conn.Close()
}

func (c *watchedConn) readCount() uint64   { return c.reads.Load() }
func (c *watchedConn) frames() *frameWatch { return &c.watch }

// abort closes the connection without waiting on a peer that no longer
// answers: a deadline in the past first fails any write in progress, and
// whatever Close would write (a TLS close_notify, say).
func (c *watchedConn) abort() {
	c.abortOnce.Do(func() {
		c.watch.close()
		c.Conn.SetDeadline(time.Unix(1, 0))
		c.Conn.Close()
	})
}

func asLink(conn net.Conn) link {
	if l, ok := conn.(link); ok {
		return l
	}
	return &watchedConn{Conn: conn}
}

// DialWebSocket opens the WebSocket at url, as Dial does, and returns it
// as a net.Conn with the headers of the server's answer, without starting
// a session on it: for a layer that runs between the two (package inner).
func DialWebSocket(ctx context.Context, url string, opts *DialOptions) (net.Conn, http.Header, error) {
	var o DialOptions
	if opts != nil {
		o = *opts
	}
	hc := http.DefaultClient
	if o.HTTPClient != nil {
		hc = o.HTTPClient
	}
	rec := &upgradeRecorder{base: hc.Transport}
	if rec.base == nil {
		rec.base = http.DefaultTransport
	}
	withRec := *hc
	withRec.Transport = rec
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		HTTPClient:      &withRec,
		HTTPHeader:      o.Header,
		Host:            o.Host,
		Subprotocols:    []string{Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, nil, handshakeError(resp)
		}
		return nil, nil, err
	}
	if ws.Subprotocol() != Subprotocol {
		ws.CloseNow()
		return nil, nil, fmt.Errorf("%w (it answered %q)", ErrNotNegotiated, ws.Subprotocol())
	}
	return newWSConn(context.WithoutCancel(ctx), ws, rec.raw, rec.conn), resp.Header, nil
}

// AcceptWebSocket upgrades r to a WebSocket, as Accept does, and returns
// it as a net.Conn without starting a session on it. Headers set on w
// before the call go with the answer. On error it has already written an
// HTTP response.
func AcceptWebSocket(w http.ResponseWriter, r *http.Request) (net.Conn, error) {
	if !offersSubprotocol(r) {
		http.Error(w, "wire version mismatch: this server speaks "+Subprotocol+"; upgrade the client", http.StatusBadRequest)
		return nil, ErrWrongVersion
	}
	rec := &hijackRecorder{ResponseWriter: w}
	if canHijack(w) {
		w = rec // else websocket.Accept refuses w before writing anything
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:    []string{Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, err
	}
	var raw io.Closer
	if rec.raw != nil {
		raw = rec.raw
	}
	return newWSConn(context.WithoutCancel(r.Context()), ws, raw, rec.raw), nil
}

// Client starts the client end of a session on conn: a connection from
// DialWebSocket, or one running inside it. The session owns conn.
func Client(conn net.Conn, cfg *Config) (*Session, error) {
	return start(yamux.Client, conn, cfg)
}

// Server starts the server end of a session on conn, as Client does.
func Server(conn net.Conn, cfg *Config) (*Session, error) {
	return start(yamux.Server, conn, cfg)
}

func start(yamuxStart func(io.ReadWriteCloser, *yamux.Config) (*yamux.Session, error), conn net.Conn, cfg *Config) (*Session, error) {
	c := cfg.withDefaults()
	ycfg, err := c.yamux()
	if err != nil {
		conn.Close()
		return nil, err
	}
	return startSession(yamuxStart, asLink(conn), ycfg, c)
}

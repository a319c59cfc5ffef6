package httpconn

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// ServerConfig configures a Server. Zero fields mean the defaults.
type ServerConfig struct {
	// Hold is how long a poll that brings nothing is held while there is
	// nothing to send. Default DefaultHold.
	Hold time.Duration
	// Expiry ends a connection that no request has reached for this long.
	// Default DefaultExpiry.
	Expiry time.Duration
	// Window is how many bytes a connection holds in each direction.
	// Default DefaultWindow.
	Window int
	// MaxConns bounds the connections open at once. Default 10000.
	MaxConns int
}

// Server is the server end of the transports: it answers the opening
// requests (Accept) and the requests of the connections they opened
// (Serve).
type Server struct {
	cfg ServerConfig

	mu     sync.Mutex
	conns  map[string]*serverConn
	closed bool

	stop chan struct{}
	done chan struct{}
}

// serverConn is the server end of one connection.
type serverConn struct {
	*conn
	srv  *Server
	id   string
	mode Mode

	// under conn.mu
	seen     time.Time // when a request last reached it
	busy     int       // requests being served
	holds    uint64    // polls held so far: a poll held by more than two newer ones goes
	down, up bool      // stream: the down and up requests arrived
	upReady  bool      // stream: the up stream's mark arrived
	peerGone bool      // poll: the client said it sent all
	reached  bool      // the client came back: a poll, or both streams
}

// NewServer returns a Server for cfg. Close stops it.
func NewServer(cfg ServerConfig) *Server {
	if cfg.Hold <= 0 {
		cfg.Hold = DefaultHold
	}
	if cfg.Expiry <= 0 {
		cfg.Expiry = DefaultExpiry
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 10000
	}
	s := &Server{cfg: cfg, conns: make(map[string]*serverConn), stop: make(chan struct{}), done: make(chan struct{})}
	go s.expire()
	return s
}

// Opening reports whether r opens a connection, and with which transport.
func Opening(r *http.Request) (Mode, bool) {
	if r.Method != http.MethodPost || r.Header.Get(SessionHeader) != "" {
		return "", false
	}
	switch m := Mode(r.Header.Get(TransportHeader)); m {
	case Stream, Poll:
		return m, true
	}
	return "", false
}

// Following reports whether r names a connection (it may not be one the
// server knows).
func Following(r *http.Request) bool {
	return r.Method == http.MethodPost && r.Header.Get(SessionHeader) != ""
}

// ErrTooMany refuses a connection beyond ServerConfig.MaxConns.
var ErrTooMany = errors.New("too many HTTP transport connections open")

// Accept answers the opening request r, with the headers already set on w,
// and returns the server end of the new connection. The answer is complete
// when Accept returns: the caller goes on with the connection on a
// goroutine of its own, as r's handler returns. On error Accept has
// already answered r.
func (s *Server) Accept(w http.ResponseWriter, r *http.Request) (net.Conn, error) {
	mode, ok := Opening(r)
	if !ok {
		http.Error(w, "not an opening request", http.StatusBadRequest)
		return nil, errors.New("not an opening request")
	}
	var raw [16]byte
	rand.Read(raw[:])
	id := base64.RawURLEncoding.EncodeToString(raw[:])
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if local == nil {
		local = addr("")
	}
	c := &serverConn{conn: newConn(s.cfg.Window, local, addr(r.RemoteAddr)), srv: s, id: id, mode: mode, seen: time.Now()}
	c.onClose = c.ended
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		http.Error(w, "server is shutting down", http.StatusServiceUnavailable)
		return nil, net.ErrClosed
	case len(s.conns) >= s.cfg.MaxConns:
		s.mu.Unlock()
		w.Header().Set("Retry-After", "30")
		http.Error(w, ErrTooMany.Error(), http.StatusServiceUnavailable)
		return nil, ErrTooMany
	}
	s.conns[id] = c
	s.mu.Unlock()
	h := w.Header()
	h.Set(SessionHeader, id)
	h.Set(HoldHeader, strconv.Itoa(int(s.cfg.Hold/time.Second)))
	h.Set(ExpiryHeader, strconv.Itoa(int(s.cfg.Expiry/time.Second)))
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
	return c, nil
}

// Serve serves r, a request of an open connection, and reports whether it
// named one; if not, it wrote nothing.
func (s *Server) Serve(w http.ResponseWriter, r *http.Request) bool {
	s.mu.Lock()
	c := s.conns[r.Header.Get(SessionHeader)]
	s.mu.Unlock()
	if c == nil {
		return false
	}
	c.mu.Lock()
	c.busy++
	c.seen = time.Now()
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.busy--
		c.seen = time.Now()
		c.mu.Unlock()
	}()
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Type", "application/octet-stream")
	switch {
	case c.mode == Poll:
		c.mu.Lock()
		c.reached = true
		c.broadcast()
		c.mu.Unlock()
		c.poll(w, r)
	case r.Header.Get(StreamHeader) == "down":
		c.streamDown(w, r)
	case r.Header.Get(StreamHeader) == "up":
		c.streamUp(w, r)
	default:
		http.Error(w, "a stream request names no direction", http.StatusBadRequest)
	}
	return true
}

// Established waits until the client of conn, a connection Accept
// returned, has come back to it (its first poll, or both its streams), so
// that an opening it gave up (a stream whose bodies a proxy held, say)
// starts no session. It returns at once for any other connection.
func Established(ctx context.Context, conn net.Conn) error {
	c, ok := conn.(*serverConn)
	if !ok {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.reached {
		switch {
		case c.err != nil:
			return c.err
		case c.closed:
			return net.ErrClosed
		case !c.wait(ctx):
			return fmt.Errorf("the client did not come back to its connection: %w", ctx.Err())
		}
	}
	return nil
}

// Len returns the number of connections open.
func (s *Server) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Close ends every connection and stops taking new ones. It is safe to
// call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns := s.conns
	s.conns = map[string]*serverConn{}
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	for _, c := range conns {
		c.fail(net.ErrClosed)
	}
	return nil
}

// expire ends the connections that no request reached for an expiry.
func (s *Server) expire() {
	defer close(s.done)
	tick := time.NewTicker(max(s.cfg.Expiry/8, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		s.mu.Lock()
		conns := make([]*serverConn, 0, len(s.conns))
		for _, c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		now := time.Now()
		for _, c := range conns {
			c.mu.Lock()
			idle := c.busy == 0 && now.Sub(c.seen) > s.cfg.Expiry
			if idle {
				c.failLocked(ErrExpired)
			}
			c.mu.Unlock()
			if idle {
				s.remove(c)
			}
		}
	}
}

func (s *Server) remove(c *serverConn) {
	s.mu.Lock()
	if s.conns[c.id] == c {
		delete(s.conns, c.id)
	}
	s.mu.Unlock()
}

// ended runs when the session closes c: a stream goes at once; a poll
// stays until the client has what was written, or expires.
func (c *serverConn) ended() {
	c.mu.Lock()
	done := c.mode == Stream || c.outBase == c.outEnd() && c.peerGone
	c.mu.Unlock()
	if done {
		c.srv.remove(c)
	}
}

// poll serves one exchange of a polling connection.
func (c *serverConn) poll(w http.ResponseWriter, r *http.Request) {
	hold := c.srv.cfg.Hold
	http.NewResponseController(w).SetReadDeadline(time.Now().Add(hold + 30*time.Second))
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	switch {
	case err != nil:
		return // the client sends it again
	case len(body) > MaxBody:
		http.Error(w, "poll body too large", http.StatusRequestEntityTooLarge)
		return
	}
	up, err1 := offset(r.Header.Get(UpHeader))
	ack, err2 := offset(r.Header.Get(AckHeader))
	room := int64(MaxBody)
	if s := r.Header.Get(RoomHeader); s != "" {
		n, err := offset(s)
		room, err1 = min(n, MaxBody), errors.Join(err1, err)
	}
	if err1 != nil || err2 != nil {
		http.Error(w, "bad poll offsets", http.StatusBadRequest)
		return
	}
	a, ok := c.exchange(r.Context(), up, body, ack, int(room), r.Header.Get(RewindHeader) != "", r.Header.Get(CloseHeader) != "", time.Now().Add(hold))
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set(DownHeader, strconv.FormatInt(a.from, 10))
	h.Set(ReceivedHeader, strconv.FormatInt(a.received, 10))
	if a.fin {
		h.Set(CloseHeader, "1")
	}
	h.Set("Content-Length", strconv.Itoa(len(a.data)))
	w.WriteHeader(http.StatusOK)
	w.Write(a.data)
	if a.done {
		c.srv.remove(c)
	}
}

// answer is what a poll's response says.
type answer struct {
	from     int64  // the offset of data in the server's bytes
	data     []byte // the server's bytes
	received int64  // how many of the client's bytes the server has
	fin      bool   // data ends the server's bytes
	done     bool   // both ends are done: the connection can go
}

// exchange takes a poll's bytes (body at offset up), its acknowledgement
// of the server's bytes (ack), the room it has for them, and its flags,
// and returns the answer, once
// there is something to say or until hold. It reports false for a
// connection that expired or was closed by the server's end.
func (c *serverConn) exchange(ctx context.Context, up int64, body []byte, ack int64, room int, rewind, fin bool, hold time.Time) (answer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ack(ack)
	if rewind {
		c.sent = c.outBase
	}
	// The client's bytes, as far as the window takes them: a reader that
	// lags holds the poll (and so the client) back.
	end := up + int64(len(body))
	for len(body) > 0 && up <= c.inEnd && end > c.inEnd && c.err == nil && !c.closed {
		c.take(up, body)
		if end <= c.inEnd || !c.waitUntil(ctx, hold) {
			break
		}
	}
	if fin && end == c.inEnd && !c.inEOF {
		c.inEOF, c.peerGone = true, true
		c.broadcast()
	}
	// Held while there is nothing to say, unless two newer polls wait too.
	if len(body) == 0 && !fin && room > 0 {
		c.holds++
		mine := c.holds
		for c.sent == c.outEnd() && !c.closed && c.err == nil && c.holds-mine < 2 && c.waitUntil(ctx, hold) {
		}
	}
	if errors.Is(c.err, ErrExpired) || errors.Is(c.err, net.ErrClosed) {
		return answer{}, false
	}
	a := answer{from: c.sent, received: c.inEnd}
	a.data = c.pending(nil, room)
	c.sent += int64(len(a.data))
	a.fin = (c.closed || c.err != nil) && c.sent == c.outEnd()
	a.done = c.closed && c.peerGone && c.outBase == c.outEnd()
	return a, true
}

// streamDown serves the down request of a streaming connection: the
// server's bytes, as they are written, until the connection ends.
func (c *serverConn) streamDown(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down {
		http.Error(w, "the down stream is open already", http.StatusConflict)
		return
	}
	c.down = true
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Time{})
	w.Header().Set("X-Accel-Buffering", "no") // nginx: pass it on as it comes
	ctx := r.Context()
	buf := make([]byte, 32<<10)
	send := func(p []byte) bool {
		c.mu.Unlock()
		defer c.mu.Lock()
		if _, err := w.Write(p); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send([]byte{markOpen}) {
		c.failLocked(errors.New("the down stream was cut"))
		return
	}
	for !c.upReady && c.err == nil && !c.closed && c.wait(ctx) {
	}
	if !c.upReady || !send([]byte{markReady}) {
		c.failLocked(errors.New("the down stream was cut"))
		return
	}
	for {
		for c.sent == c.outEnd() && c.err == nil && !c.closed && c.wait(ctx) {
		}
		if ctx.Err() != nil || c.err != nil {
			c.failLocked(errors.New("the down stream was cut"))
			return
		}
		data := c.pending(buf, len(buf))
		if len(data) == 0 {
			return // closed, and all sent: the end of the body is the end of the stream
		}
		if !send(data) {
			c.failLocked(errors.New("the down stream was cut"))
			return
		}
		c.sent += int64(len(data))
		c.ack(c.sent)
	}
}

// streamUp serves the up request of a streaming connection: the client's
// bytes, as they come, until its body ends.
func (c *serverConn) streamUp(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	if c.up {
		c.mu.Unlock()
		http.Error(w, "the up stream is open already", http.StatusConflict)
		return
	}
	c.up = true
	c.mu.Unlock()
	http.NewResponseController(w).SetReadDeadline(time.Time{})
	var mark [1]byte
	if _, err := io.ReadFull(r.Body, mark[:]); err != nil || mark[0] != markOpen {
		c.fail(errors.New("the up stream did not start"))
		return
	}
	c.mu.Lock()
	c.upReady, c.reached = true, true
	c.broadcast()
	c.mu.Unlock()
	buf := make([]byte, 32<<10)
	ctx := r.Context()
	for {
		c.mu.Lock()
		for c.in.n >= c.window && c.err == nil && !c.closed && c.wait(ctx) {
		}
		room := c.window - c.in.n
		stop := c.err != nil || c.closed || ctx.Err() != nil
		c.mu.Unlock()
		if stop {
			return
		}
		n, err := r.Body.Read(buf[:min(len(buf), room)])
		c.mu.Lock()
		c.take(c.inEnd, buf[:n])
		switch {
		case errors.Is(err, io.EOF):
			c.inEOF = true
			c.broadcast()
		case err != nil:
			c.failLocked(errors.New("the up stream was cut"))
		}
		c.mu.Unlock()
		if err != nil {
			w.WriteHeader(http.StatusOK)
			return
		}
	}
}

// offset parses a byte offset header.
func offset(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, errors.New("bad offset")
	}
	return n, nil
}

package httpconn

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Mode is a transport: how a connection's bytes travel in requests.
type Mode string

const (
	// Stream carries each direction in one long streamed request.
	Stream Mode = "stream"
	// Poll carries both directions in short whole exchanges.
	Poll Mode = "poll"
)

// The headers of the protocol (see the package documentation).
const (
	TransportHeader = "Burrow-Transport"
	ProtocolHeader  = "Burrow-Protocol"
	SessionHeader   = "Burrow-Session"
	HoldHeader      = "Burrow-Hold"
	ExpiryHeader    = "Burrow-Expiry"
	StreamHeader    = "Burrow-Stream"
	UpHeader        = "Burrow-Up"
	AckHeader       = "Burrow-Ack"
	RoomHeader      = "Burrow-Room"
	RewindHeader    = "Burrow-Rewind"
	CloseHeader     = "Burrow-Close"
	DownHeader      = "Burrow-Down"
	ReceivedHeader  = "Burrow-Received"
)

const (
	// MaxBody bounds the body of one poll and of its response.
	MaxBody = 1 << 20
	// minRoom is the least room for the server's bytes worth a poll that
	// brings none.
	minRoom = 64 << 10
	// DefaultWindow is how many bytes an end holds in each direction.
	DefaultWindow = 4 << 20
	// DefaultHold is how long the server holds a poll that brought
	// nothing while it has nothing to send.
	DefaultHold = 15 * time.Second
	// DefaultExpiry is how long a polling connection lives without a
	// request.
	DefaultExpiry = 60 * time.Second

	markOpen  = 0x01 // first byte of a stream: the down request arrived
	markReady = 0x02 // second byte of the down stream: the up stream arrived too
)

// ErrExpired ends a connection that the other end stopped reaching.
var ErrExpired = errors.New("the connection expired: the other end stopped polling")

// ErrGone ends a connection the server no longer knows.
var ErrGone = errors.New("the server no longer knows this connection")

// conn is one end of a connection as the session sees it. Read takes what
// the transport received (in); Write queues what the transport is to send
// (out), which stays until the peer acknowledges it. Both hold at most
// window bytes, and the transport works on them under mu.
type conn struct {
	mu     sync.Mutex
	wake   chan struct{} // closed and replaced on every change
	window int

	in    queue // received, not yet read
	inEnd int64 // bytes received in all: the offset of in's end
	inEOF bool  // the peer sent all it will: Read returns io.EOF once in is empty

	out     queue // written, not yet acknowledged
	outBase int64 // the offset of out[0]
	sent    int64 // the offset of the next byte to send, from outBase to outEnd

	closed bool  // Close was called
	err    error // the transport failed
	rdl    time.Time
	wdl    time.Time
	rt, wt *time.Timer

	local, remote net.Addr
	onClose       func() // runs once, on Close
	onFail        func() // runs, with mu held, when the transport fails
	closeOnce     sync.Once
}

func newConn(window int, local, remote net.Addr) *conn {
	if window <= 0 {
		window = DefaultWindow
	}
	return &conn{wake: make(chan struct{}), window: window, local: local, remote: remote}
}

// broadcast wakes everyone waiting on the connection. Called with mu held.
func (c *conn) broadcast() {
	close(c.wake)
	c.wake = make(chan struct{})
}

// wait releases mu until the connection changes or ctx ends, and takes it
// again. It reports whether ctx is still live.
func (c *conn) wait(ctx context.Context) bool {
	w := c.wake
	c.mu.Unlock()
	defer c.mu.Lock()
	select {
	case <-w:
		return true
	case <-ctx.Done():
		return false
	}
}

// waitUntil is wait, also ending at t (if set). It reports whether t is
// still ahead.
func (c *conn) waitUntil(ctx context.Context, t time.Time) bool {
	if t.IsZero() {
		return c.wait(ctx)
	}
	d := time.Until(t)
	if d <= 0 {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	c.wait(ctx)
	return time.Now().Before(t)
}

func (c *conn) outEnd() int64 { return c.outBase + int64(c.out.n) }

func (c *conn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		switch {
		case c.in.n > 0:
			n := c.in.copyAt(p, 0)
			c.in.drop(n)
			c.broadcast()
			return n, nil
		case c.closed:
			return 0, net.ErrClosed
		case c.inEOF:
			return 0, io.EOF
		case c.err != nil:
			return 0, c.err
		case !c.rdl.IsZero() && !time.Now().Before(c.rdl):
			return 0, os.ErrDeadlineExceeded
		}
		c.wait(context.Background())
	}
}

func (c *conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	written := 0
	for written < len(p) {
		switch {
		case c.closed:
			return written, net.ErrClosed
		case c.err != nil:
			return written, c.err
		case !c.wdl.IsZero() && !time.Now().Before(c.wdl):
			return written, os.ErrDeadlineExceeded
		}
		if room := c.window - c.out.n; room > 0 {
			n := min(room, len(p)-written)
			c.out.push(p[written : written+n])
			written += n
			c.broadcast()
			continue
		}
		c.wait(context.Background())
	}
	return written, nil
}

// Close ends the connection. The transport still delivers what was
// written, for a while.
func (c *conn) Close() error {
	c.mu.Lock()
	c.closed = true
	for _, t := range []*time.Timer{c.rt, c.wt} {
		if t != nil {
			t.Stop()
		}
	}
	c.broadcast()
	c.mu.Unlock()
	c.closeOnce.Do(func() {
		if c.onClose != nil {
			c.onClose()
		}
	})
	return nil
}

// fail ends the connection with err, as the transport found it.
func (c *conn) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failLocked(err)
}

func (c *conn) failLocked(err error) {
	if c.err == nil {
		c.err = err
		if c.onFail != nil {
			c.onFail()
		}
	}
	c.broadcast()
}

// take accepts what it can of p, received at offset off: bytes had
// already are skipped, bytes past a gap are refused, and bytes beyond the
// window are left to be sent again. Called with mu held.
func (c *conn) take(off int64, p []byte) {
	if off > c.inEnd {
		return
	}
	skip := c.inEnd - off
	if skip >= int64(len(p)) {
		return
	}
	p = p[skip:]
	n := min(len(p), c.window-c.in.n)
	if n <= 0 {
		return
	}
	c.in.push(p[:n])
	c.inEnd += int64(n)
	c.broadcast()
}

// ack drops the bytes before off, which the peer has. Called with mu held.
func (c *conn) ack(off int64) {
	if off <= c.outBase || off > c.outEnd() {
		return
	}
	c.out.drop(int(off - c.outBase))
	c.outBase = off
	c.sent = max(c.sent, off)
	c.broadcast()
}

// pending copies up to limit bytes from sent on into dst's array (grown
// if it is short) and returns them, without moving sent. Called with mu
// held.
func (c *conn) pending(dst []byte, limit int) []byte {
	k := int(min(int64(limit), c.outEnd()-c.sent))
	if cap(dst) < k {
		dst = make([]byte, k)
	}
	dst = dst[:k]
	c.out.copyAt(dst, int(c.sent-c.outBase))
	return dst
}

// chunkSize is the size of a queue's chunks.
const chunkSize = 64 << 10

// chunks are the queues' chunks, shared by all connections.
var chunks = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// queue holds bytes in chunks from a pool, appended at the end and
// dropped from the front: what it holds is never copied to make room, and
// an empty queue holds no memory.
type queue struct {
	chunks []*[]byte
	head   int // the offset of the first byte in chunks[0]
	n      int // bytes held
}

func (q *queue) push(p []byte) {
	for len(p) > 0 {
		end := q.head + q.n
		if end == len(q.chunks)*chunkSize {
			q.chunks = append(q.chunks, chunks.Get().(*[]byte))
		}
		c := copy((*q.chunks[end/chunkSize])[end%chunkSize:], p)
		p = p[c:]
		q.n += c
	}
}

// copyAt copies the bytes from offset from on into dst and returns how
// many it copied.
func (q *queue) copyAt(dst []byte, from int) int {
	done := 0
	for done < len(dst) && from+done < q.n {
		at := q.head + from + done
		chunk := (*q.chunks[at/chunkSize])[at%chunkSize:]
		done += copy(dst[done:], chunk[:min(len(chunk), q.n-from-done)])
	}
	return done
}

// drop drops the first k bytes.
func (q *queue) drop(k int) {
	q.head += k
	q.n -= k
	for q.head >= chunkSize || q.n == 0 && len(q.chunks) > 0 {
		chunks.Put(q.chunks[0])
		q.chunks[0] = nil
		q.chunks = q.chunks[1:]
		q.head = max(0, q.head-chunkSize)
	}
	if q.n == 0 {
		q.head, q.chunks = 0, nil
	}
}

func (c *conn) LocalAddr() net.Addr  { return c.local }
func (c *conn) RemoteAddr() net.Addr { return c.remote }

func (c *conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rdl = t
	c.rt = c.rearm(c.rt, t)
	return nil
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wdl = t
	c.wt = c.rearm(c.wt, t)
	return nil
}

// rearm sets timer to wake the connection's waiters at t. Called with mu
// held.
func (c *conn) rearm(timer *time.Timer, t time.Time) *time.Timer {
	if timer != nil {
		timer.Stop()
	}
	c.broadcast() // a deadline already past, or cleared, applies now
	if t.IsZero() {
		return nil
	}
	return time.AfterFunc(time.Until(t), func() {
		c.mu.Lock()
		c.broadcast()
		c.mu.Unlock()
	})
}

// addr is the address of an HTTP peer, as the request gave it.
type addr string

func (a addr) Network() string { return "tcp" }
func (a addr) String() string  { return string(a) }

package mux

import (
	"io"
	"net"
	"sync"
)

// corkWriter holds writes back and sends them together: between Cork and
// Uncork, writes are appended to a buffer, and the last Uncork sends it
// in one write to w. Outside a corked span a write goes straight through.
// Writes may come from any goroutine; a write while another goroutine
// holds the cork joins the corked bytes.
type corkWriter struct {
	w   io.Writer
	max int // the buffer is written out early once it holds this much

	bufs *sync.Pool // of *[]byte with capacity max

	mu    sync.Mutex
	corks int     // Cork calls not yet matched by Uncork
	buf   *[]byte // held bytes; from bufs, and only while there are some
	err   error   // first write error; sticky
}

// corkConn is a net.Conn whose writes can be corked (see corkWriter). It
// sits under TLS, where one WebSocket message becomes several TLS
// records: corked for the length of a message, those records reach the
// kernel as one write rather than one syscall each, without a goroutine
// or a hand-off between the writer and the socket.
type corkConn struct {
	net.Conn
	corkWriter

	closeOnce sync.Once
	closeErr  error
}

func newCorkConn(c net.Conn, max int, bufs *sync.Pool) *corkConn {
	return &corkConn{Conn: c, corkWriter: corkWriter{w: c, max: max, bufs: bufs}}
}

// Write sends p, or holds it back while corked.
func (c *corkConn) Write(p []byte) (int, error) { return c.corkWriter.Write(p) }

// corkBody is the connection a client's WebSocket upgrade leaves open
// (the body of the 101 response, above TLS), its writes corked like
// corkConn's. coder/websocket masks a client's frames in its 4 KiB write
// buffer and writes each piece out as it fills, so that without it every
// 4 KiB of a message is a TLS record of its own, sealed, framed and, on
// the server, opened and read one by one. Corked for the length of a
// message, the pieces reach crypto/tls together and leave in full-size
// records.
type corkBody struct {
	io.ReadWriteCloser
	corkWriter
}

// bodyBatch is what a corkBody holds before handing it to TLS: several
// full records, small enough to stay in the CPU's cache until sealed.
const bodyBatch = 64 << 10

var bodyBufs = newBufPool(bodyBatch)

func newCorkBody(rwc io.ReadWriteCloser) *corkBody {
	return &corkBody{ReadWriteCloser: rwc, corkWriter: corkWriter{w: rwc, max: bodyBatch, bufs: bodyBufs}}
}

// Write sends p, or holds it back while corked.
func (b *corkBody) Write(p []byte) (int, error) { return b.corkWriter.Write(p) }

// corkBufs serves corkConns of the default size.
var corkBufs = newBufPool(DefaultMaxBatch)

func newBufPool(size int) *sync.Pool {
	return &sync.Pool{New: func() any { b := make([]byte, 0, size); return &b }}
}

// corker is what wsConn needs of the connections it corks around a
// message: the corkConn under TLS, the corkBody above it.
type corker interface {
	Cork()
	Uncork() error
}

// CoalesceWrites wraps c so that the TLS records of one WebSocket message
// leave in one write to c (see corkConn); max bounds the bytes held back
// (DefaultMaxBatch when 0; see MaxBatch). Use it under TLS, on the
// connection a WebSocket session runs over: the session finds it through
// (*tls.Conn).NetConn and corks it around each message it sends.
func CoalesceWrites(c net.Conn, max int) net.Conn {
	max, pool := batchPool(max)
	return newCorkConn(c, max, pool)
}

// batchPool returns max, or DefaultMaxBatch for 0, and a pool of buffers
// of that size: the shared one for the default.
func batchPool(max int) (int, *sync.Pool) {
	if max <= 0 || max == DefaultMaxBatch {
		return DefaultMaxBatch, corkBufs
	}
	return max, newBufPool(max)
}

// Cork holds writes back until the matching Uncork.
func (c *corkWriter) Cork() {
	c.mu.Lock()
	c.corks++
	c.mu.Unlock()
}

// Uncork ends a corked span; the last one sends what was held back.
func (c *corkWriter) Uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corks > 0 {
		c.corks--
	}
	if c.corks > 0 {
		return c.err
	}
	return c.flushLocked()
}

// flushLocked writes out the held bytes and gives the buffer back, so
// that an idle connection holds none; c.mu is held.
func (c *corkWriter) flushLocked() error {
	if c.buf == nil {
		return c.err
	}
	bp := c.buf
	c.buf = nil
	if c.err == nil && len(*bp) > 0 {
		_, c.err = c.w.Write(*bp)
	}
	*bp = (*bp)[:0]
	c.bufs.Put(bp)
	return c.err
}

// Write sends p, or holds it back while corked.
func (c *corkWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.corks == 0 {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		n, err := c.w.Write(p)
		if err != nil {
			c.err = err
		}
		return n, err
	}
	if c.buf != nil && len(*c.buf)+len(p) > c.max {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) >= c.max {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		n, err := c.w.Write(p)
		if err != nil {
			c.err = err
		}
		return n, err
	}
	if c.buf == nil {
		c.buf = c.bufs.Get().(*[]byte)
	}
	*c.buf = append(*c.buf, p...)
	return len(p), nil
}

// CloseWrite sends what is held back and half-closes the underlying
// connection when it supports that.
func (c *corkConn) CloseWrite() error {
	c.mu.Lock()
	err := c.flushLocked()
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return nil
}

// Close closes the underlying connection at once, without waiting for a
// write that may be blocked on it (closing is what unblocks that write).
func (c *corkConn) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.Conn.Close() })
	return c.closeErr
}

// findCorker returns the corkConn under c (through *tls.Conn's NetConn),
// or nil.
func findCorker(c net.Conn) corker {
	for c != nil {
		if k, ok := c.(corker); ok {
			return k
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		c = u.NetConn()
	}
	return nil
}

// corkersOf returns what wsConn corks around a message, in the order to
// uncork them: raw, the connection a WebSocket runs over, when it is a
// corkBody, then the corkConn under under, if any.
func corkersOf(raw io.Closer, under net.Conn) []corker {
	var out []corker
	if k, ok := raw.(*corkBody); ok {
		out = append(out, k)
	}
	if k := findCorker(under); k != nil {
		out = append(out, k)
	}
	return out
}

// coalescingListener wraps accepted connections with CoalesceWrites.
type coalescingListener struct {
	net.Listener
	max  int
	bufs *sync.Pool // shared by its connections
}

// CoalescingListener returns a listener whose connections coalesce the
// TLS records of a message (see CoalesceWrites, whose max this is), for a
// server that serves TLS on top of it.
func CoalescingListener(l net.Listener, max int) net.Listener {
	max, pool := batchPool(max)
	return coalescingListener{l, max, pool}
}

func (l coalescingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newCorkConn(c, l.max, l.bufs), nil
}

package mux

import (
	"net"
	"sync"
)

// corkConn is a net.Conn whose writes can be held back and sent together:
// between Cork and Uncork, writes are appended to a buffer, and Uncork
// sends it in one write. Outside a corked span a write goes straight
// through. It sits under TLS, where one WebSocket message becomes several
// TLS records (a client's masked frames leave in 4 KiB pieces, each a
// record of its own): corked for the length of a message, those records
// reach the kernel as one write rather than one syscall each, without a
// goroutine or a hand-off between the writer and the socket.
//
// Writes may come from any goroutine (crypto/tls serialises its own); a
// write while another goroutine holds the cork joins the corked bytes.
type corkConn struct {
	net.Conn
	max int // the buffer is written out early once it holds this much

	bufs *sync.Pool // of *[]byte with capacity max

	mu    sync.Mutex
	corks int     // Cork calls not yet matched by Uncork
	buf   *[]byte // held bytes; from bufs, and only while there are some
	err   error   // first write error; sticky

	closeOnce sync.Once
	closeErr  error
}

// corkBufs serves corkConns of the default size.
var corkBufs = newBufPool(DefaultMaxBatch)

func newBufPool(size int) *sync.Pool {
	return &sync.Pool{New: func() any { b := make([]byte, 0, size); return &b }}
}

// corker is what wsConn needs of the connection under TLS.
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
	return &corkConn{Conn: c, max: max, bufs: pool}
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
func (c *corkConn) Cork() {
	c.mu.Lock()
	c.corks++
	c.mu.Unlock()
}

// Uncork ends a corked span; the last one sends what was held back.
func (c *corkConn) Uncork() error {
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
func (c *corkConn) flushLocked() error {
	if c.buf == nil {
		return c.err
	}
	bp := c.buf
	c.buf = nil
	if c.err == nil && len(*bp) > 0 {
		_, c.err = c.Conn.Write(*bp)
	}
	*bp = (*bp)[:0]
	c.bufs.Put(bp)
	return c.err
}

// Write sends p, or holds it back while corked.
func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.corks == 0 {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		n, err := c.Conn.Write(p)
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
		n, err := c.Conn.Write(p)
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
	if hc, ok := c.Conn.(halfCloser); ok {
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
	return &corkConn{Conn: c, max: l.max, bufs: l.bufs}, nil
}

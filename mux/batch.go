package mux

import (
	"errors"
	"net"
	"sync"
	"time"
)

// batcher queues writes and hands them to flush from one goroutine, in
// batches: while flush is busy on the network, later writes pile up and
// leave together, so batches grow with load and an idle connection still
// sends a lone write at once. Write returns once the bytes are queued; a
// flush error is reported by the next Write. The queue is bounded by max:
// a writer that gets ahead of the network blocks.
//
// The flushing goroutine and its buffer exist only while there is
// something to send, so an idle connection costs neither.
type batcher struct {
	flush func([]byte) error
	max   int
	bufs  *sync.Pool // of *[]byte with capacity max

	mu      sync.Mutex
	cond    sync.Cond // broadcast when pending grows, drains, or closes
	pending *[]byte   // nil while nothing is queued
	err     error     // first flush error; sticky
	closed  bool
	running bool // a flush goroutine is working
}

var errBatcherClosed = errors.New("connection closed")

// batchBufs serves batchers of the default size; others get a pool each.
var batchBufs = newBufPool(DefaultMaxBatch)

func newBufPool(size int) *sync.Pool {
	return &sync.Pool{New: func() any { b := make([]byte, 0, size); return &b }}
}

func newBatcher(max int, flush func([]byte) error) *batcher {
	pool := batchBufs
	if max != DefaultMaxBatch {
		pool = newBufPool(max)
	}
	b := &batcher{flush: flush, max: max, bufs: pool}
	b.cond.L = &b.mu
	return b
}

// queued is the number of bytes waiting; b.mu is held.
func (b *batcher) queued() int {
	if b.pending == nil {
		return 0
	}
	return len(*b.pending)
}

// Write queues a copy of p. It blocks while the queue is full. A write of
// half the batch size or more is not copied: once everything before it
// has left, it is flushed from the caller's goroutine.
func (b *batcher) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(p) >= b.max/2 {
		return b.writeDirect(p)
	}
	for b.queued() > 0 && b.queued()+len(p) > b.max && b.err == nil && !b.closed {
		b.cond.Wait()
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.closed {
		return 0, errBatcherClosed
	}
	if b.pending == nil {
		b.pending = b.bufs.Get().(*[]byte)
	}
	*b.pending = append(*b.pending, p...)
	if !b.running {
		b.running = true
		go b.loop()
	}
	return len(p), nil
}

// writeDirect flushes p itself, in order after what is queued; b.mu is
// held and is released during the flush.
func (b *batcher) writeDirect(p []byte) (int, error) {
	for (b.queued() > 0 || b.running) && b.err == nil && !b.closed {
		b.cond.Wait()
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.closed {
		return 0, errBatcherClosed
	}
	b.running = true // keeps other flushes out until this one is done
	b.mu.Unlock()
	err := b.flush(p)
	b.mu.Lock()
	b.running = false
	if err != nil && b.err == nil {
		b.err = err
	}
	b.cond.Broadcast()
	if err != nil {
		return 0, err
	}
	// Small writes that queued meanwhile wait for a flusher.
	if b.queued() > 0 {
		b.running = true
		go b.loop()
	}
	return len(p), nil
}

// loop flushes batches until the queue is empty or a flush fails.
func (b *batcher) loop() {
	b.mu.Lock()
	for b.queued() > 0 && b.err == nil {
		bp := b.pending
		b.pending = nil
		b.cond.Broadcast() // room for blocked writers
		b.mu.Unlock()

		err := b.flush(*bp)

		// Back to the pool, unless one oversized write grew it.
		if cap(*bp) <= 2*b.max {
			*bp = (*bp)[:0]
			b.bufs.Put(bp)
		}
		b.mu.Lock()
		if err != nil && b.err == nil {
			b.err = err
		}
	}
	b.running = false
	b.cond.Broadcast()
	b.mu.Unlock()
}

// Drain waits up to timeout until everything queued has been flushed. It
// reports whether the queue is empty and no flush failed.
func (b *batcher) Drain(timeout time.Duration) bool {
	timedOut := false
	t := time.AfterFunc(timeout, func() {
		b.mu.Lock()
		timedOut = true
		b.cond.Broadcast()
		b.mu.Unlock()
	})
	defer t.Stop()
	b.mu.Lock()
	defer b.mu.Unlock()
	for (b.queued() > 0 || b.running) && b.err == nil && !timedOut {
		b.cond.Wait()
	}
	return b.queued() == 0 && !b.running && b.err == nil
}

// Close stops taking writes and waits up to timeout for the queue to be
// flushed. It reports whether everything queued went out without error;
// when it returns false a flush may still be blocked on the network, and
// the caller must unblock it (by closing the connection) and then call
// Wait.
func (b *batcher) Close(timeout time.Duration) bool {
	b.mu.Lock()
	b.closed = true
	b.cond.Broadcast()
	b.mu.Unlock()
	return b.Drain(timeout)
}

// Wait returns once no flush is running.
func (b *batcher) Wait() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.running {
		b.cond.Wait()
	}
}

// batchConn is a net.Conn whose writes are batched by a batcher, so that
// the many small writes of the layers above (yamux frames, WebSocket
// frames, 4 KiB TLS records) reach the kernel as few large ones.
type batchConn struct {
	net.Conn
	b         *batcher
	closeOnce sync.Once
	closeErr  error
}

// CoalesceWrites wraps c so that writes are queued and sent in batches of
// up to max bytes by a background goroutine (see the package doc). Use it
// under TLS, on the connection a WebSocket runs over.
func CoalesceWrites(c net.Conn, max int) net.Conn {
	if max <= 0 {
		max = DefaultMaxBatch
	}
	bc := &batchConn{Conn: c}
	bc.b = newBatcher(max, func(p []byte) error {
		_, err := c.Write(p)
		return err
	})
	return bc
}

func (c *batchConn) Write(p []byte) (int, error) { return c.b.Write(p) }

// SetWriteDeadline applies to the bytes written from now on: what is
// already queued is flushed first (for up to closeDrainTimeout), so that a
// caller that writes, then sets a deadline of now to stop further writes
// (as crypto/tls does when closing), does not lose what it wrote.
func (c *batchConn) SetWriteDeadline(t time.Time) error {
	c.b.Drain(closeDrainTimeout)
	return c.Conn.SetWriteDeadline(t)
}

// SetDeadline is SetWriteDeadline and SetReadDeadline together.
func (c *batchConn) SetDeadline(t time.Time) error {
	c.b.Drain(closeDrainTimeout)
	return c.Conn.SetDeadline(t)
}

// CloseWrite flushes and half-closes the underlying connection when it
// supports that.
func (c *batchConn) CloseWrite() error {
	if !c.b.Close(closeDrainTimeout) {
		c.Conn.Close()
		c.b.Wait()
		return errBatcherClosed
	}
	if hc, ok := c.Conn.(halfCloser); ok {
		return hc.CloseWrite()
	}
	return nil
}

func (c *batchConn) Close() error {
	c.closeOnce.Do(func() {
		drained := c.b.Close(closeDrainTimeout)
		c.closeErr = c.Conn.Close()
		if !drained {
			c.b.Wait()
		}
	})
	return c.closeErr
}

// coalescingListener wraps accepted connections with CoalesceWrites.
type coalescingListener struct {
	net.Listener
	max int
}

// CoalescingListener returns a listener whose connections batch their
// writes, for a server that serves TLS on top of it.
func CoalescingListener(l net.Listener, max int) net.Listener {
	return coalescingListener{l, max}
}

func (l coalescingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return CoalesceWrites(c, l.max), nil
}

package mux

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// wsConn is a net.Conn over a WebSocket that coalesces writes.
//
// yamux writes every frame as two calls (12-byte header, then body). Sent
// one WebSocket message each, that would be two TLS records and two
// syscalls per frame. Instead Write appends to a pending buffer and a
// single flusher goroutine sends whatever has accumulated as one binary
// message. While the flusher is busy on the network, later writes pile up
// behind it and leave together, so coalescing grows with load and an idle
// connection still sends a lone frame at once.
//
// Write returns once the bytes are queued; a network error is reported by
// the next Write. The queue is bounded by maxBatch: a writer that gets
// ahead of the network blocks.
type wsConn struct {
	net.Conn // websocket.NetConn: reads, deadlines, addresses
	ws       *websocket.Conn
	maxBatch int

	mu      sync.Mutex
	cond    sync.Cond // broadcast when pending grows, drains, or the conn closes
	pending []byte
	spare   []byte
	err     error // first write error; sticky
	closed  bool

	flushDone chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// closeDrainTimeout bounds how long Close waits for queued bytes to leave.
const closeDrainTimeout = 2 * time.Second

var errConnClosed = errors.New("websocket connection closed")

func newWSConn(ctx context.Context, ws *websocket.Conn, maxBatch int) *wsConn {
	c := &wsConn{
		Conn:      websocket.NetConn(ctx, ws, websocket.MessageBinary),
		ws:        ws,
		maxBatch:  maxBatch,
		pending:   make([]byte, 0, maxBatch),
		spare:     make([]byte, 0, maxBatch),
		flushDone: make(chan struct{}),
	}
	c.cond.L = &c.mu
	go c.flushLoop()
	return c
}

// Write queues p to be sent. It blocks while the queue is full.
func (c *wsConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// A write larger than the batch limit is still taken whole once the
	// queue is empty, so progress never depends on the limit.
	for len(c.pending) > 0 && len(c.pending)+len(p) > c.maxBatch && c.err == nil && !c.closed {
		c.cond.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	if c.closed {
		return 0, errConnClosed
	}
	c.pending = append(c.pending, p...)
	c.cond.Broadcast()
	return len(p), nil
}

func (c *wsConn) flushLoop() {
	defer close(c.flushDone)
	for {
		c.mu.Lock()
		for len(c.pending) == 0 && !c.closed {
			c.cond.Wait()
		}
		if len(c.pending) == 0 {
			c.mu.Unlock()
			return
		}
		buf := c.pending
		c.pending = c.spare[:0]
		c.mu.Unlock()

		_, err := c.Conn.Write(buf) // one binary message

		c.mu.Lock()
		c.spare = buf[:0]
		if err != nil && c.err == nil {
			c.err = err
		}
		c.cond.Broadcast()
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Close sends what is queued, then closes the WebSocket. It is safe to
// call more than once and from several goroutines.
func (c *wsConn) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.cond.Broadcast()
		c.mu.Unlock()
		drained := time.NewTimer(closeDrainTimeout)
		defer drained.Stop()
		select {
		case <-c.flushDone:
		case <-drained.C:
			// The network is not taking our bytes (a blackholed peer):
			// abort the write in progress rather than wait for TCP.
			c.closeErr = c.ws.CloseNow()
			<-c.flushDone
			return
		}
		c.mu.Lock()
		failed := c.err != nil
		c.mu.Unlock()
		if failed {
			// The peer is gone or the network is broken: a closing
			// handshake would only wait for its timeout.
			c.closeErr = c.ws.CloseNow()
			return
		}
		c.closeErr = c.Conn.Close()
	})
	return c.closeErr
}

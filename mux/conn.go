package mux

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// wsConn is a net.Conn over a WebSocket that coalesces writes.
//
// yamux writes every frame as two calls (12-byte header, then body). Sent
// one WebSocket message each, that would be two TLS records and two
// syscalls per frame. Instead writes go through a batcher, which sends
// whatever has accumulated as one binary message.
type wsConn struct {
	net.Conn // websocket.NetConn: reads, deadlines, addresses
	ws       *websocket.Conn
	raw      io.Closer // the connection under ws, when known; see Close
	b        *batcher

	reads atomic.Uint64 // reads that returned data, for keepAlive

	closeOnce sync.Once
	closeErr  error
}

// closeDrainTimeout bounds how long Close waits for queued bytes to leave,
// and closeHandshakeTimeout how long it then waits for the peer to answer
// its close frame.
const (
	closeDrainTimeout     = 2 * time.Second
	closeHandshakeTimeout = 2 * time.Second
)

// newWSConn wraps ws, which runs over raw (nil when unknown).
func newWSConn(ctx context.Context, ws *websocket.Conn, raw io.Closer, maxBatch int) *wsConn {
	nc := websocket.NetConn(ctx, ws, websocket.MessageBinary)
	return &wsConn{
		Conn: nc,
		ws:   ws,
		raw:  raw,
		b: newBatcher(maxBatch, func(p []byte) error {
			_, err := nc.Write(p) // one binary message
			return err
		}),
	}
}

// readChunk bounds one Read. A Read returns only once it has filled p or
// reached the end of a WebSocket message (up to DefaultMaxBatch), and
// keepAlive sees progress only when a Read returns: bounded, a slow link
// shows life every readChunk bytes.
const readChunk = 32 << 10

// Read reads from the WebSocket's binary messages.
func (c *wsConn) Read(p []byte) (int, error) {
	if len(p) > readChunk {
		p = p[:readChunk]
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.reads.Add(1)
	}
	return n, err
}

// Write queues p to be sent. It blocks while the queue is full.
func (c *wsConn) Write(p []byte) (int, error) { return c.b.Write(p) }

// Close sends what is queued, then closes the WebSocket. It is safe to
// call more than once and from several goroutines.
func (c *wsConn) Close() error {
	c.closeOnce.Do(func() {
		if !c.b.Close(closeDrainTimeout) {
			// The network is not taking our bytes (a blackholed or dead
			// peer): abort rather than wait for TCP or for a closing
			// handshake that will not come.
			c.closeErr = c.ws.CloseNow()
			c.b.Wait()
			return
		}
		// A closing handshake, not NetConn's immediate close: closing
		// the socket with the peer's last frames unread would make the
		// kernel reset the connection and drop what we just queued.
		c.closeErr = c.closeHandshake()
		c.Conn.Close() // releases NetConn's timers
	})
	return c.closeErr
}

// closeHandshake closes the WebSocket with a closing handshake of at most
// closeHandshakeTimeout. coder/websocket bounds its own wait at 5 s, except
// when it starts between two reads of a message the peer has stopped
// sending: it then reads the rest without a deadline, for as long as the
// connection stays open. Closing the connection under it ends the wait.
func (c *wsConn) closeHandshake() error {
	if c.raw == nil {
		return c.ws.Close(websocket.StatusNormalClosure, "")
	}
	done := make(chan error, 1)
	go func() { done <- c.ws.Close(websocket.StatusNormalClosure, "") }()
	t := time.NewTimer(closeHandshakeTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		c.raw.Close()
		<-done
		return errCloseHandshakeTimeout
	}
}

var errCloseHandshakeTimeout = errors.New("peer did not answer the WebSocket close frame")

// abort closes the connection at once, dropping what is queued and without
// a closing handshake, for a peer that no longer answers; a later Close
// does nothing more.
func (c *wsConn) abort() {
	c.closeOnce.Do(func() {
		c.closeErr = c.ws.CloseNow()
		c.b.Close(0)
		c.b.Wait()
		c.Conn.Close()
	})
}

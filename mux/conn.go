package mux

import (
	"context"
	"net"
	"sync"
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
	b        *batcher

	closeOnce sync.Once
	closeErr  error
}

// closeDrainTimeout bounds how long Close waits for queued bytes to leave.
const closeDrainTimeout = 2 * time.Second

func newWSConn(ctx context.Context, ws *websocket.Conn, maxBatch int) *wsConn {
	nc := websocket.NetConn(ctx, ws, websocket.MessageBinary)
	return &wsConn{
		Conn: nc,
		ws:   ws,
		b: newBatcher(maxBatch, func(p []byte) error {
			_, err := nc.Write(p) // one binary message
			return err
		}),
	}
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
		c.closeErr = c.ws.Close(websocket.StatusNormalClosure, "")
		c.Conn.Close() // releases NetConn's timers
	})
	return c.closeErr
}

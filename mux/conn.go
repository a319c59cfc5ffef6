package mux

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// wsConn is a net.Conn over a WebSocket, written to by yamux's send loop.
//
// yamux writes every data frame as two calls, its 12-byte header and then
// the body. Sent as a WebSocket message each, that would be two messages,
// two TLS records and two syscalls per frame. wsConn holds a data header
// back and sends it with its body as one message. Small frames (a short
// body, a window update, a ping) are held back too while yamux's send
// queue has more frames waiting (Session.SendQueueLen, which counts its
// answers to the peer's pings too): the send loop is about to write them,
// and they join the same message, up to coalesceLimit bytes.
// Frames queue when the network is slower than the streams writing to it.
// A frame with nothing queued behind it leaves at once, and held frames
// leave on their own before a large frame: a small frame waits at most
// for the send loop to take the next one from its queue. Each message is
// written in the caller's goroutine, with the connections corked (see
// corkersOf): a client's upgraded connection above TLS, so that the
// message reaches TLS in full records, and the connection under TLS, so
// that its records leave in one syscall: no timer, no goroutine and no
// hand-off between yamux and the socket.
type wsConn struct {
	net.Conn // websocket.NetConn: addresses, and releasing its timers
	ws       *websocket.Conn
	raw      io.Closer // the connection under ws, when known; see Close
	corks    []corker  // the corkBody above TLS and the corkConn under it, those there are

	reads   atomic.Uint64 // reads that returned data, for keepAlive
	msg     io.Reader     // the message being read; Read's own
	readEOF bool          // the peer closed normally; Read's own
	watch   frameWatch    // wakes parked streams as their frames are read

	// wsem is held by a write in progress, and by Close; a channel so
	// that Close can give up on a write blocked on a silent peer.
	wsem   chan struct{}
	hdr    [yamuxHeaderSize]byte // a data frame header waiting for its body
	held   bool
	out    *[]byte    // small frames held back for the next message; from outBufs
	queued func() int // frames waiting in yamux's send queue; nil if unknown
	werr   error      // first write error; sticky
	closed bool

	closeOnce sync.Once
	closeErr  error

	// readTimer and writeTimer abort the connection at its deadlines.
	deadlineMu            sync.Mutex
	readTimer, writeTimer *time.Timer
}

// SetReadDeadline, SetWriteDeadline and SetDeadline bound what follows:
// once a deadline passes the connection is aborted, and every Read and
// Write fails from then on. Reads and writes go to the WebSocket without
// NetConn's deadlines (see Read), so that the session pays no timer per
// frame; the deadlines serve the exchanges before a session starts on the
// connection (package inner's handshake and login), where a peer that
// stops answering must not hold the connection for ever. A zero time
// clears the deadline.
func (c *wsConn) SetReadDeadline(t time.Time) error {
	c.setDeadline(&c.readTimer, t)
	return nil
}

func (c *wsConn) SetWriteDeadline(t time.Time) error {
	c.setDeadline(&c.writeTimer, t)
	return nil
}

func (c *wsConn) SetDeadline(t time.Time) error {
	c.setDeadline(&c.readTimer, t)
	c.setDeadline(&c.writeTimer, t)
	return nil
}

func (c *wsConn) setDeadline(timer **time.Timer, t time.Time) {
	c.deadlineMu.Lock()
	defer c.deadlineMu.Unlock()
	if *timer != nil {
		(*timer).Stop()
		*timer = nil
	}
	if !t.IsZero() {
		*timer = time.AfterFunc(time.Until(t), c.abort)
	}
}

// closeDrainTimeout bounds how long Close waits for a write in progress,
// and closeHandshakeTimeout how long it then waits for the peer to answer
// its close frame.
const (
	closeDrainTimeout     = 2 * time.Second
	closeHandshakeTimeout = 2 * time.Second
)

// yamux frame header layout (yamux spec.md): version, type, flags,
// stream id, length. A data frame's length is the size of the body that
// follows it.
const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
)

// smallMessage is the largest body copied behind its header into a
// message; a larger one is sent as a message of several WebSocket frames
// (header, body, end), which costs a few bytes rather than a copy.
// coalesceLimit bounds the small frames held back for one message: about
// one TLS record.
const (
	smallMessage  = 4 << 10
	coalesceLimit = 16 << 10
)

var outBufs = newBufPool(coalesceLimit + yamuxHeaderSize + smallMessage)

// newWSConn wraps ws, which runs over raw (nil when unknown); under is the
// network connection beneath it (a *tls.Conn over a corkConn, say), or nil.
func newWSConn(ctx context.Context, ws *websocket.Conn, raw io.Closer, under net.Conn) *wsConn {
	nc := websocket.NetConn(ctx, ws, websocket.MessageBinary)
	// Messages are read as a stream, never held whole: no size limit.
	ws.SetReadLimit(-1)
	return &wsConn{
		Conn:  nc,
		ws:    ws,
		raw:   raw,
		corks: corkersOf(raw, under),
		wsem:  make(chan struct{}, 1),
	}
}

// readChunk bounds one Read. A Read returns only once it has filled p or
// reached the end of a WebSocket message, and keepAlive sees progress
// only when a Read returns: bounded, a slow link shows life every
// readChunk bytes.
const readChunk = 32 << 10

// Read reads the payload of the WebSocket's binary messages as one byte
// stream. yamux's receive loop is its only caller. It reads with a
// context that never ends, as Write does: a read is ended by closing the
// connection, and NetConn's cancellable context would cost a timer per
// frame read. A Read returns bytes of one yamux frame at most, so that
// c.watch knows when yamux has handled a frame (see frameWatch).
func (c *wsConn) Read(p []byte) (int, error) {
	p = c.watch.limit(p[:min(len(p), readChunk)])
	n, err := c.read(p)
	c.watch.advance(p[:n])
	if err != nil {
		c.watch.close()
	}
	return n, err
}

func (c *wsConn) read(p []byte) (int, error) {
	for {
		if c.msg == nil {
			if c.readEOF {
				return 0, io.EOF
			}
			typ, r, err := c.ws.Reader(context.Background())
			if err != nil {
				switch websocket.CloseStatus(err) {
				case websocket.StatusNormalClosure, websocket.StatusGoingAway:
					c.readEOF = true
					return 0, io.EOF
				}
				return 0, err
			}
			if typ != websocket.MessageBinary {
				err := fmt.Errorf("unexpected %v message from the peer", typ)
				c.ws.Close(websocket.StatusUnsupportedData, err.Error())
				return 0, err
			}
			c.msg = r
		}
		n, err := c.msg.Read(p)
		if err == io.EOF {
			c.msg, err = nil, nil
		}
		if n > 0 {
			c.reads.Add(1)
			return n, err
		}
		if err != nil {
			return 0, err
		}
	}
}

// isDataHeader reports whether p is a yamux data frame header announcing
// a body.
func isDataHeader(p []byte) bool {
	return len(p) == yamuxHeaderSize && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:]) > 0
}

// Write sends p as a WebSocket message, a data frame header together with
// the body written next, small frames together while more are queued. It
// returns once the message has been handed to the kernel, or p has been
// held back for a message the send loop's next frame completes. After a
// failure every Write returns the same error.
func (c *wsConn) Write(p []byte) (int, error) {
	c.wsem <- struct{}{}
	defer func() { <-c.wsem }()
	if c.werr != nil {
		return 0, c.werr
	}
	if c.closed {
		return 0, net.ErrClosed
	}
	if !c.held && isDataHeader(p) {
		if c.out != nil && binary.BigEndian.Uint32(p[8:]) > smallMessage {
			// A large frame is next: what is held leaves now, rather
			// than wait for its body to be copied, sealed and written.
			if err := c.flush(); err != nil {
				c.werr = err
				return 0, err
			}
		}
		copy(c.hdr[:], p)
		c.held = true
		return len(p), nil
	}
	if err := c.send(p); err != nil {
		c.werr = err
		return 0, err
	}
	return len(p), nil
}

// setQueue tells c how to see yamux's send queue, once the session over
// it exists.
func (c *wsConn) setQueue(queued func() int) {
	c.wsem <- struct{}{}
	c.queued = queued
	<-c.wsem
}

// send writes p, behind the held header if any and the frames held back
// before it; c.wsem is held.
func (c *wsConn) send(p []byte) error {
	held := c.held
	c.held = false
	if len(p) <= smallMessage {
		if c.out == nil {
			c.out = outBufs.Get().(*[]byte)
		}
		if held {
			*c.out = append(*c.out, c.hdr[:]...)
		}
		*c.out = append(*c.out, p...)
		if len(*c.out) < coalesceLimit && c.queued != nil && c.queued() > 0 {
			return nil // the send loop's next frame joins this message
		}
		return c.flush()
	}
	if err := c.flush(); err != nil { // held frames, if any, go first
		return err
	}
	return c.corked(func(ctx context.Context) error {
		w, err := c.ws.Writer(ctx, websocket.MessageBinary)
		if err != nil {
			return err
		}
		if held {
			_, err = w.Write(c.hdr[:])
		}
		if err == nil {
			_, err = w.Write(p)
		}
		if err != nil {
			w.Close()
			return err
		}
		return w.Close()
	})
}

// flush sends the frames held back as one message; c.wsem is held.
func (c *wsConn) flush() error {
	if c.out == nil {
		return nil
	}
	err := c.corked(func(ctx context.Context) error {
		return c.ws.Write(ctx, websocket.MessageBinary, *c.out)
	})
	c.releaseOut()
	return err
}

// releaseOut gives the buffer of held frames back; c.wsem is held.
func (c *wsConn) releaseOut() {
	putOut(c.out)
	c.out = nil
}

// putOut gives a buffer of held frames back to outBufs; nil is ignored.
func putOut(bp *[]byte) {
	if bp != nil {
		*bp = (*bp)[:0]
		outBufs.Put(bp)
	}
}

// corked runs write, which writes one message, with c.corks corked.
func (c *wsConn) corked(write func(context.Context) error) (err error) {
	if len(c.corks) > 0 {
		for _, k := range c.corks {
			k.Cork()
		}
		// Above TLS first: what it held goes to TLS, whose records the
		// corkConn under it still holds, and leave in one write.
		defer func() {
			for _, k := range c.corks {
				if uerr := k.Uncork(); err == nil {
					err = uerr
				}
			}
		}()
	}
	// No deadline in the context: a write that blocks is ended by
	// closing the connection (Close, or keepAlive's abort), and a
	// context that can end costs coder/websocket a timer per frame.
	return write(context.Background())
}

// lockForClose takes c.wsem, waiting up to closeDrainTimeout for a write
// in progress. It reports false when it gave up: the connection has then
// been closed under the write, which fails and lets go.
func (c *wsConn) lockForClose(timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case c.wsem <- struct{}{}:
		return true
	case <-t.C:
	}
	c.ws.CloseNow()
	c.wsem <- struct{}{}
	return false
}

// Close waits for a write in progress, then closes the WebSocket. It is
// safe to call more than once and from several goroutines.
func (c *wsConn) Close() error {
	c.SetDeadline(time.Time{})
	c.watch.close()
	c.closeOnce.Do(func() {
		drained := c.lockForClose(closeDrainTimeout)
		c.closed = true
		// Frames held back were reported written to yamux: they go
		// before the close frame, unless writing has failed.
		pending := c.out
		c.out = nil
		if c.werr != nil || !drained {
			putOut(pending)
			pending = nil
		}
		<-c.wsem
		if !drained {
			// The network is not taking our bytes (a blackholed or dead
			// peer): the connection is already closed; do not wait for
			// a closing handshake that will not come.
			c.Conn.Close()
			return
		}
		// A closing handshake, not NetConn's immediate close: closing
		// the socket with the peer's last frames unread would make the
		// kernel reset the connection and drop what we just sent.
		c.closeErr = c.closeHandshake(pending)
		c.Conn.Close() // releases NetConn's timers
	})
	return c.closeErr
}

// closeHandshake sends pending (frames held back, or nil) and closes the
// WebSocket with a closing handshake, in at most closeHandshakeTimeout.
// coder/websocket bounds its own wait at 5 s, except when it starts
// between two reads of a message the peer has stopped sending: it then
// reads the rest without a deadline, for as long as the connection stays
// open. Closing the connection under it ends the wait.
func (c *wsConn) closeHandshake(pending *[]byte) error {
	bye := func() error {
		if pending != nil {
			err := c.corked(func(ctx context.Context) error {
				return c.ws.Write(ctx, websocket.MessageBinary, *pending)
			})
			putOut(pending)
			if err != nil {
				c.ws.CloseNow()
				return err
			}
		}
		return c.ws.Close(websocket.StatusNormalClosure, "")
	}
	done := make(chan error, 1)
	go func() { done <- bye() }()
	t := time.NewTimer(closeHandshakeTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		if c.raw != nil {
			c.raw.Close()
		} else {
			c.ws.CloseNow()
		}
		<-done
		return errCloseHandshakeTimeout
	}
}

var errCloseHandshakeTimeout = errors.New("peer did not answer the WebSocket close frame")

// abort closes the connection at once, without a closing handshake, for
// a peer that no longer answers; a later Close does nothing more.
func (c *wsConn) abort() {
	c.watch.close()
	c.closeOnce.Do(func() {
		c.closeErr = c.ws.CloseNow()
		c.lockForClose(0) // a blocked write fails now that ws is closed
		c.releaseOut()
		c.closed = true
		<-c.wsem
		c.Conn.Close()
	})
}

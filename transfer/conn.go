package transfer

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// deadliner is implemented by streams that support deadlines (net.Conn,
// yamux streams); others are closed when a timeout passes.
type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// conn frames one stream. Reads and writes may run in parallel; writes
// are serialized. Every Read and Write of the underlying stream is bounded
// by the idle timeout (timeout 0 turns it off for reads, as for a reader
// that waits on the peer's work), and cancelling ctx aborts both.
type conn struct {
	ctx      context.Context
	also     context.Context // a data stream's transfer (see endWith); recv's own
	rw       io.ReadWriteCloser
	dl       deadliner
	br       *bufio.Reader
	rtimeout atomic.Int64 // time.Duration
	wtimeout time.Duration
	timedOut atomic.Bool
	canceled atomic.Bool
	stop     func() bool
	rtimer   *time.Timer
	wtimer   *time.Timer
	closeMu  sync.Once
	maxChunk int    // largest chunk frame accepted, per the transfer's chunk size
	rbuf     []byte // payloads of frames other than Chunk
	cbuf     []byte // Chunk payloads

	wmu  sync.Mutex
	wenc enc
}

func newConn(ctx context.Context, rw io.ReadWriteCloser, timeout time.Duration) *conn {
	c := &conn{ctx: ctx, rw: rw, wtimeout: timeout, maxChunk: MinChunkSize}
	c.rtimeout.Store(int64(timeout))
	c.dl, _ = rw.(deadliner)
	if c.dl == nil {
		// Timers that close the stream when a read or write overruns.
		c.rtimer = time.AfterFunc(time.Hour, c.expire)
		c.rtimer.Stop()
		c.wtimer = time.AfterFunc(time.Hour, c.expire)
		c.wtimer.Stop()
	}
	c.br = bufio.NewReaderSize(readerFunc(c.read), 64<<10)
	c.stop = context.AfterFunc(ctx, c.cancel)
	return c
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// abort unblocks pending reads and writes.
func (c *conn) abort() {
	if c.dl != nil {
		past := time.Unix(1, 0)
		c.dl.SetReadDeadline(past)
		c.dl.SetWriteDeadline(past)
	}
	c.closeMu.Do(func() { c.rw.Close() })
}

// close releases the stream. Safe to call more than once.
func (c *conn) close() {
	c.stop()
	c.closeMu.Do(func() { c.rw.Close() })
	if c.rtimer != nil {
		c.rtimer.Stop()
	}
	if c.wtimer != nil {
		c.wtimer.Stop()
	}
}

func (c *conn) setReadTimeout(d time.Duration) { c.rtimeout.Store(int64(d)) }

func (c *conn) read(p []byte) (int, error) {
	d := time.Duration(c.rtimeout.Load())
	switch {
	case d > 0 && c.dl != nil:
		c.dl.SetReadDeadline(time.Now().Add(d))
	case d > 0:
		c.rtimer.Reset(d)
		defer c.rtimer.Stop()
	case c.dl != nil:
		c.dl.SetReadDeadline(time.Time{})
	}
	n, err := c.rw.Read(p)
	return n, c.mapErr(err)
}

func (c *conn) expire() {
	c.timedOut.Store(true)
	c.closeMu.Do(func() { c.rw.Close() })
}

func (c *conn) mapErr(err error) error {
	switch {
	case err == nil || err == io.EOF:
		return err
	case c.canceled.Load():
		return context.Canceled
	case c.timedOut.Load() || isTimeout(err):
		return fmt.Errorf("%w: the peer sent nothing for %v; the connection may be down", ErrTimeout, time.Duration(c.rtimeout.Load()))
	}
	return err
}

// isTimeout reports whether err is a deadline passing: os.ErrDeadlineExceeded
// (net.Pipe, sockets, files) or a net.Error that says so (a yamux
// stream's ErrTimeout is not os.ErrDeadlineExceeded).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// endWith makes ctx end c as c's own context does: it aborts c's reads and
// writes when it ends, and recv acts on no frame after. It returns the
// function that stops this. A data stream ends with its transfer this way.
func (c *conn) endWith(ctx context.Context) (stop func() bool) {
	c.also = ctx
	return context.AfterFunc(ctx, c.cancel)
}

// cancel marks c cancelled and unblocks its pending reads and writes.
func (c *conn) cancel() {
	c.canceled.Store(true)
	c.abort()
}

// ended reports whether c's work is cancelled. The contexts are asked,
// not only the flag their AfterFuncs set: those run in goroutines of their
// own, maybe after this stream has gone on to act on frames it had
// buffered.
func (c *conn) ended() bool {
	return c.canceled.Load() || c.ctx.Err() != nil || c.also != nil && c.also.Err() != nil
}

// write sends bufs as one frame's bytes, in pieces of at most maxWrite,
// each given the write timeout afresh: a peer that reads slowly but
// steadily is not taken for one that reads nothing.
func (c *conn) write(bufs ...[]byte) error {
	if c.wtimeout > 0 && c.dl == nil {
		defer c.wtimer.Stop()
	}
	for _, b := range bufs {
		for len(b) > 0 {
			n := min(len(b), maxWrite)
			switch {
			case c.wtimeout > 0 && c.dl != nil:
				c.dl.SetWriteDeadline(time.Now().Add(c.wtimeout))
			case c.wtimeout > 0:
				c.wtimer.Reset(c.wtimeout)
			}
			if _, err := c.rw.Write(b[:n]); err != nil {
				// Cancelled first: abort ends a write with a deadline
				// in the past.
				if c.canceled.Load() {
					return context.Canceled
				}
				if c.timedOut.Load() || isTimeout(err) {
					return fmt.Errorf("%w: the peer read nothing for %v; the connection may be down", ErrTimeout, c.wtimeout)
				}
				return err
			}
			b = b[n:]
		}
	}
	return nil
}

// maxWrite bounds one write to the stream. yamux sends a write as one
// frame when the stream's window allows, and its send loop keeps a buffer
// as large as the largest frame its session has sent, for the session's
// life: written whole, a chunk would leave every session that carried a
// transfer holding a chunk-sized buffer (4 MiB and more). 256 KiB is the
// frame size forwarded TCP uses; larger pieces sent no faster.
const maxWrite = 256 << 10

// send writes one frame whose payload is built by fill.
func (c *conn) send(typ byte, fill func(e *enc)) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	e := &c.wenc
	e.b = append(e.b[:0], typ, 0, 0, 0, 0)
	if fill != nil {
		fill(e)
	}
	binary.BigEndian.PutUint32(e.b[1:5], uint32(len(e.b)-frameHeaderLen))
	err := c.write(e.b)
	if cap(e.b) > 4*batchBytes {
		e.b = nil // do not keep a large manifest buffer around
	}
	return err
}

// sendChunk writes a Chunk frame without copying data.
func (c *conn) sendChunk(h *chunkHeader, data []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	e := &c.wenc
	e.b = append(e.b[:0], frameChunk, 0, 0, 0, 0)
	e.b = encodeChunkHeader(e.b, h)
	binary.BigEndian.PutUint32(e.b[1:5], uint32(len(e.b)-frameHeaderLen+len(data)))
	return c.write(e.b, data)
}

func (c *conn) sendError(err error) error {
	return c.send(frameError, func(e *enc) { encodeError(e, err) })
}

// recv reads the next frame other than a keepalive. The payload is valid
// until the next call. An Error frame is returned as the error it
// carries; so is EOF before a frame ("the peer closed the stream").
func (c *conn) recv() (byte, []byte, error) {
	for {
		if c.ended() {
			// What the stream still buffers is not acted on: a
			// cancelled transfer writes and commits nothing more.
			return 0, nil, context.Canceled
		}
		var hdr [frameHeaderLen]byte
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			if err == io.EOF {
				return 0, nil, fmt.Errorf("%w: the peer closed the stream", io.ErrUnexpectedEOF)
			}
			return 0, nil, err
		}
		typ, n := hdr[0], binary.BigEndian.Uint32(hdr[1:])
		lim := frameLimit(typ, c.maxChunk)
		if lim < 0 {
			return 0, nil, protoErr("unknown frame type %d", typ)
		}
		if int64(n) > int64(lim) {
			return 0, nil, fmt.Errorf("%w: frame of type %d is %d bytes, more than %d", ErrLimit, typ, n, lim)
		}
		p := c.payload(typ, int(n))
		if _, err := io.ReadFull(c.br, p); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, nil, err
		}
		switch typ {
		case frameKeepalive:
			continue
		case frameError:
			return typ, nil, decodeError(p)
		}
		if c.ended() { // while the payload was read
			return 0, nil, context.Canceled
		}
		return typ, p, nil
	}
}

// payload returns a buffer for a frame's payload of n bytes. A Chunk's
// data lands on a dioAlign boundary, with room after it to round its
// length up to one, so that it can go to disk with direct I/O as it is.
func (c *conn) payload(typ byte, n int) []byte {
	if typ != frameChunk {
		if cap(c.rbuf) < n {
			c.rbuf = make([]byte, n)
		}
		return c.rbuf[:n]
	}
	if cap(c.cbuf) < n+2*dioAlign {
		c.cbuf = make([]byte, n+2*dioAlign)
	}
	b := c.cbuf[:cap(c.cbuf)]
	off := alignOffset(b, chunkHeaderLen)
	return b[off : off+n]
}

// reason returns the peer's explanation for a failed write, when it sent
// one before closing: an Error frame waiting to be read. Otherwise it
// returns err.
func (c *conn) reason(err error) error {
	var re *RemoteError
	if err == nil || errors.As(err, &re) || c.canceled.Load() {
		return err
	}
	c.setReadTimeout(errorWriteTimeout)
	for range 64 {
		typ, _, rerr := c.recv()
		if errors.As(rerr, &re) {
			return rerr
		}
		if rerr != nil || typ == frameEnd {
			break
		}
	}
	return err
}

// writeWhile runs write in its own goroutine while read runs in this one,
// so that a peer refusing what it is being sent (a manifest over its
// limits) can say so, and stop the writing, without reading the rest.
func (c *conn) writeWhile(write, read func() error) error {
	werr := make(chan error, 1)
	go func() { werr <- write() }()
	if err := read(); err != nil {
		select {
		case <-werr:
			// Everything was written: the stream is intact, and the
			// caller can still tell the peer why it stops.
		default:
			c.abort()
			<-werr
		}
		return err
	}
	return <-werr
}

// expect reads a frame of type want (a keepalive is skipped, an Error
// returned as an error).
func (c *conn) expect(want byte) ([]byte, error) {
	typ, p, err := c.recv()
	if err != nil {
		return nil, err
	}
	if typ != want {
		return nil, protoErr("got frame type %d, expected %d", typ, want)
	}
	return p, nil
}

// keepalive sends Keepalive frames every interval until the returned
// function is called; it returns once the sender has stopped.
func (c *conn) keepalive(every time.Duration) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if c.send(frameKeepalive, nil) != nil {
					return
				}
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

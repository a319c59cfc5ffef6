package mux

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// MaxEarlyData bounds the payload an EarlyStream sends before the peer's
// reply. It fits in yamux's initial stream window, so a write before the
// reply never waits for the peer to read.
const MaxEarlyData = 64 << 10

// SessionFunc returns the session to open a stream on, waiting for one if
// there is none yet; it fails when ctx ends.
type SessionFunc func(ctx context.Context) (*Session, error)

// EarlyStream is a stream whose opener sends payload right behind the
// header, without waiting for the peer's reply, which saves a round trip
// on every new connection. Its acceptor must read exactly the header
// before it replies (ReadHeader does), so that the early payload waits in
// the stream for the reply to be accepted.
//
// Writes go out at once, up to MaxEarlyData before the reply; beyond
// that, Write waits for the reply. When the session ends before the
// reply and nothing but the header was sent, WaitReply opens the stream
// again on the next session, so a peer that restarted costs the
// connection nothing. Payload is never sent twice: once some has left,
// the peer may have passed it to the target, and a request that the
// target would carry out twice (a payment, a write) must not be
// replayed; the stream then fails with ErrEarlyDataSent.
//
// Reads wait for the reply: they return its refusal, or the payload that
// follows an accepting one. Exactly one goroutine must call WaitReply.
type EarlyStream struct {
	header   []byte
	sessions SessionFunc

	// wmu orders the writes on the stream: the header, the early payload
	// and a resend of the header on a new stream.
	wmu sync.Mutex

	mu         sync.Mutex
	sess       *Session
	st         *Stream
	headerSent bool
	earlySent  int       // payload bytes sent before the reply
	fin        bool      // the write side is closed
	deadline   time.Time // the caller's read deadline, applied after the reply
	accepted   bool
	err        error                   // why the stream failed; set at most once
	settled    chan struct{}           // closed once accepted or err is set
	moved      chan struct{}           // closed (and replaced) when reopen moves to a new stream
	abort      context.CancelCauseFunc // ends a WaitReply in progress
}

// OpenEarly opens a stream for h on the session sessions returns, trying
// the next session if that one closes before the stream is open. It sends
// nothing yet: the header leaves with the first Write, CloseWrite or
// WaitReply, whichever comes first.
func OpenEarly(ctx context.Context, sessions SessionFunc, h Header) (*EarlyStream, error) {
	header, err := AppendHeader(nil, h)
	if err != nil {
		return nil, err
	}
	sess, st, err := openStream(ctx, sessions)
	if err != nil {
		return nil, err
	}
	return &EarlyStream{header: header, sessions: sessions, sess: sess, st: st, settled: make(chan struct{}), moved: make(chan struct{})}, nil
}

// openStream opens a stream on the live session; a session that closes
// under it is not the stream's fault, so it tries the next one.
func openStream(ctx context.Context, sessions SessionFunc) (*Session, *Stream, error) {
	for {
		sess, err := sessions(ctx)
		if err != nil {
			return nil, nil, err
		}
		st, err := sess.OpenStream()
		if err == nil {
			return sess, st, nil
		}
		if !sess.IsClosed() {
			return nil, nil, fmt.Errorf("opening stream: %w", err)
		}
	}
}

// WaitReply sends the header if nothing has carried it yet and reads the
// peer's reply, until ctx ends. It returns nil when the stream was
// accepted, a *RemoteError when the peer refused it, and another error
// when no reply came. If the session ends first, it opens the stream on
// the next session and sends the header again, unless payload had left
// too (ErrEarlyDataSent).
// Once it has returned, reads return the refusal or the payload.
func (e *EarlyStream) WaitReply(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	e.mu.Lock()
	if e.isSettled() {
		defer e.mu.Unlock()
		return e.err
	}
	e.abort = cancel
	e.mu.Unlock()
	stop := context.AfterFunc(ctx, e.interrupt)
	defer stop()

	deadline, _ := ctx.Deadline()
	e.sendHeader()
	for {
		e.mu.Lock()
		sess, st := e.sess, e.st
		// Under e.mu, so that interrupt, which takes it too, comes
		// after and sets the deadline that wakes the read.
		if ctx.Err() != nil {
			deadline = time.Now()
		}
		st.SetReadDeadline(deadline)
		e.mu.Unlock()
		err := ReadReply(st)
		var refused *RemoteError
		switch {
		case err == nil, errors.As(err, &refused):
		case errors.Is(err, yamux.ErrTimeout) || ctx.Err() != nil:
			// The read deadline is ctx's, or ctx has ended: it is
			// done, or will be at once.
			<-ctx.Done()
			err = fmt.Errorf("no stream reply: %w", context.Cause(ctx))
		case sess.IsClosed():
			if err = e.reopen(ctx); err == nil {
				continue
			}
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		e.settle(err)
		if e.accepted {
			st.SetReadDeadline(e.deadline)
		}
		return e.err
	}
}

// sendHeader sends the header alone, unless payload has carried it.
func (e *EarlyStream) sendHeader() {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	e.mu.Lock()
	send := !e.headerSent && !e.isSettled()
	e.headerSent = true
	st := e.st
	e.mu.Unlock()
	if send {
		// A failure shows in the reply, which WaitReply reads next.
		st.Write(e.header)
	}
}

// ErrEarlyDataSent is why an EarlyStream fails when its session ends
// before the reply after payload has left: the payload is not sent again.
var ErrEarlyDataSent = errors.New("the session ended before the server replied, with the connection's first bytes sent; they are not sent again, since the target may have received them")

// reopen opens the stream again on the next session and sends what the
// old one carried, the header and the half-close, provided no payload
// had left.
func (e *EarlyStream) reopen(ctx context.Context) error {
	e.mu.Lock()
	sent := e.earlySent
	e.mu.Unlock()
	if sent > 0 {
		return ErrEarlyDataSent
	}
	sess, st, err := openStream(ctx, e.sessions)
	if err != nil {
		return err
	}
	e.wmu.Lock()
	defer e.wmu.Unlock()
	e.mu.Lock()
	if e.isSettled() {
		e.mu.Unlock()
		st.Close()
		return e.err
	}
	e.sess, e.st = sess, st
	close(e.moved)
	e.moved = make(chan struct{})
	fin := e.fin
	e.mu.Unlock()
	// A failure shows in the reply, which WaitReply reads next.
	st.Write(e.header)
	if fin {
		st.Close()
	}
	return nil
}

// interrupt wakes a WaitReply blocked reading the reply once its ctx has
// ended.
func (e *EarlyStream) interrupt() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.accepted {
		e.st.SetReadDeadline(time.Now())
	}
}

// Accepted returns the stream once the peer has accepted it: reads then
// go to it as they are. Before, it returns nil and pending; once the
// stream has failed, before or instead of a reply, nil and not pending.
func (e *EarlyStream) Accepted() (st *Stream, pending bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.accepted {
		return e.st, false
	}
	return nil, e.err == nil
}

// Settled waits until the wait for the reply is over (see WaitReply) and
// returns the stream the peer accepted, or why the stream failed.
func (e *EarlyStream) Settled() (*Stream, error) {
	<-e.settled
	if e.err != nil {
		return nil, e.err
	}
	st, _ := e.Accepted()
	return st, nil
}

// isSettled reports whether the wait for the reply is over; e.mu is held.
func (e *EarlyStream) isSettled() bool { return e.accepted || e.err != nil }

// settle ends the wait for the reply: accepted when err is nil, failed
// otherwise. The first call wins; e.mu is held.
func (e *EarlyStream) settle(err error) {
	if e.isSettled() {
		return
	}
	if err == nil {
		e.accepted = true
	} else {
		e.err = err
	}
	close(e.settled)
}

// Read waits for the reply, then reads the payload that follows it, or
// returns the reason the stream failed (a *RemoteError for a refusal).
func (e *EarlyStream) Read(p []byte) (int, error) {
	<-e.settled
	if e.err != nil {
		return 0, e.err
	}
	return e.st.Read(p)
}

// Write sends p. Before the reply it sends at most MaxEarlyData bytes,
// then waits for the reply.
func (e *EarlyStream) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		e.mu.Lock()
		st, accepted, err, full := e.st, e.accepted, e.err, e.earlySent >= MaxEarlyData
		e.mu.Unlock()
		switch {
		case err != nil:
			return n, err
		case accepted:
			m, err := st.Write(p)
			return n + m, err
		case full:
			<-e.settled
			continue
		}
		m, err := e.writeEarly(p)
		if err != nil {
			return n, err
		}
		n += m
		p = p[m:]
	}
	return n, nil
}

// writeEarly sends what fits of p before the reply. It sends nothing if
// the reply has come meanwhile. While the stream's session is closed it
// waits for WaitReply to move the stream to the next session: written
// to the dead stream, p would be lost, and counted as sent, fail the
// connection.
func (e *EarlyStream) writeEarly(p []byte) (int, error) {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	e.mu.Lock()
	for !e.isSettled() && e.sess.IsClosed() {
		moved := e.moved
		e.mu.Unlock()
		e.wmu.Unlock()
		select {
		case <-moved:
		case <-e.settled:
		}
		e.wmu.Lock()
		e.mu.Lock()
	}
	if e.isSettled() {
		e.mu.Unlock()
		return 0, nil
	}
	if e.fin {
		e.mu.Unlock()
		return 0, yamux.ErrStreamClosed
	}
	p = p[:min(len(p), MaxEarlyData-e.earlySent)]
	e.earlySent += len(p)
	b := p
	if !e.headerSent {
		b = append(e.header[:len(e.header):len(e.header)], p...)
		e.headerSent = true
	}
	st := e.st
	e.mu.Unlock()
	// A failure shows in the reply, which WaitReply reads.
	st.Write(b)
	return len(p), nil
}

// CloseWrite half-closes the stream: the peer reads EOF after the payload,
// and may go on writing. Before the reply, a resend on a new session
// half-closes too.
func (e *EarlyStream) CloseWrite() error {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	e.mu.Lock()
	e.fin = true
	send := !e.headerSent && !e.isSettled()
	e.headerSent = true
	st := e.st
	e.mu.Unlock()
	if send {
		st.Write(e.header)
	}
	// A yamux stream's Close is a half-close.
	return st.Close()
}

// Close closes the stream. Before the reply, it gives up waiting for it:
// reads, writes and WaitReply return net.ErrClosed.
func (e *EarlyStream) Close() error {
	e.mu.Lock()
	e.settle(net.ErrClosed)
	st, abort := e.st, e.abort
	e.mu.Unlock()
	if abort != nil {
		abort(net.ErrClosed)
	}
	return st.Close()
}

// Reset ends the stream as a failure (see Stream.Reset). Before the
// reply, it gives up waiting for it, as Close does.
func (e *EarlyStream) Reset() error {
	e.mu.Lock()
	e.settle(net.ErrClosed)
	st, abort := e.st, e.abort
	e.mu.Unlock()
	if abort != nil {
		abort(net.ErrClosed)
	}
	return st.Reset()
}

// RemoteClosed reports whether the peer accepted the stream and then
// closed its side (see Stream.RemoteClosed).
func (e *EarlyStream) RemoteClosed() bool {
	st, _ := e.Accepted()
	return st != nil && st.RemoteClosed()
}

// SetReadDeadline sets the deadline of reads from the stream; it applies
// once the reply has arrived (until then, WaitReply's ctx bounds reads).
func (e *EarlyStream) SetReadDeadline(t time.Time) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.deadline = t
	if e.accepted {
		return e.st.SetReadDeadline(t)
	}
	return nil
}

// StreamID is the yamux stream ID of the stream, for logs; it changes when
// the stream is opened again on a new session.
func (e *EarlyStream) StreamID() uint32 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.st.StreamID()
}

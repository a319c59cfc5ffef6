package mux

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/yamux"
)

// Session is one tunnel: a yamux session over a WebSocket connection,
// started by Dial or Accept. Either end opens streams on it; closing it
// closes the connection and every stream.
type Session struct {
	ys    *yamux.Session
	watch *frameWatch // the connection's, which sees each frame yamux reads; nil for FromYamux
}

// FromYamux wraps a yamux session that runs over another connection than
// the WebSocket of Dial and Accept: yamux's frames as they are over a
// net.Pipe or TCP, say, as tests and benchmarks use. No frame of it is
// watched, so its streams do not park (Stream.Park reports false).
func FromYamux(ys *yamux.Session) *Session { return &Session{ys: ys} }

// OpenStream opens a stream to the peer.
func (s *Session) OpenStream() (*Stream, error) {
	st, err := s.ys.OpenStream()
	if err != nil {
		return nil, err
	}
	return &Stream{st: st, sess: s}, nil
}

// AcceptStream waits for the peer to open a stream, until the session
// ends.
func (s *Session) AcceptStream() (*Stream, error) {
	st, err := s.ys.AcceptStream()
	if err != nil {
		return nil, err
	}
	return &Stream{st: st, sess: s}, nil
}

// Close ends the session, its streams and its connection. It is safe to
// call more than once.
func (s *Session) Close() error { return s.ys.Close() }

// IsClosed reports whether the session has ended.
func (s *Session) IsClosed() bool { return s.ys.IsClosed() }

// CloseChan is closed once the session has ended.
func (s *Session) CloseChan() <-chan struct{} { return s.ys.CloseChan() }

// NumStreams is the number of streams open on the session.
func (s *Session) NumStreams() int { return s.ys.NumStreams() }

// GoAway tells the peer to open no more streams; those open go on.
func (s *Session) GoAway() error { return s.ys.GoAway() }

// Parked is the number of the session's streams whose reader is parked
// (see Stream.Park).
func (s *Session) Parked() int {
	if s.watch == nil {
		return 0
	}
	s.watch.mu.Lock()
	defer s.watch.mu.Unlock()
	return len(s.watch.parked)
}

// Stream is one stream of a Session, a net.Conn. Its Close is a
// half-close: it sends FIN and reads on until the peer closes too, or
// the session ends.
type Stream struct {
	st   *yamux.Stream
	sess *Session
}

var _ net.Conn = (*Stream)(nil)

func (s *Stream) Read(p []byte) (int, error)  { return s.st.Read(p) }
func (s *Stream) Write(p []byte) (int, error) { return s.st.Write(p) }

// Close half-closes the stream (see Stream).
func (s *Stream) Close() error                       { return s.st.Close() }
func (s *Stream) LocalAddr() net.Addr                { return s.st.LocalAddr() }
func (s *Stream) RemoteAddr() net.Addr               { return s.st.RemoteAddr() }
func (s *Stream) SetDeadline(t time.Time) error      { return s.st.SetDeadline(t) }
func (s *Stream) SetReadDeadline(t time.Time) error  { return s.st.SetReadDeadline(t) }
func (s *Stream) SetWriteDeadline(t time.Time) error { return s.st.SetWriteDeadline(t) }

// Reset ends the stream as a failure, in both directions at once: the
// peer's reads and writes fail with yamux.ErrConnectionReset instead of
// ending as after Close, so that a connection cut here is not taken
// there for one that ended. Data not yet read is dropped. A stream
// closed by both sides, or reset, is left as it is.
func (s *Stream) Reset() error { return s.st.Reset() }

// RemoteClosed reports whether the peer closed its side of the stream:
// a read that returns io.EOF after it has read all the peer sent. A
// read returns io.EOF too once the session has ended, after what had
// arrived, with RemoteClosed false: what the peer sent may be cut short.
func (s *Stream) RemoteClosed() bool { return s.st.RemoteClosed() }

// StreamID is the stream's yamux ID, for logs.
func (s *Stream) StreamID() uint32 { return s.st.StreamID() }

// Session is the session the stream belongs to.
func (s *Stream) Session() *Session { return s.sess }

// Waker is a reader parked on a stream (see Stream.Park).
type Waker interface {
	// Wake carries the reader on, on a goroutine of its own: its
	// stream may have something to read.
	Wake()
	// CarryOn is Wake on the caller's goroutine, which then runs the
	// reader.
	CarryOn()
}

// Park records w, to be woken once yamux has taken in a frame that
// carries data, a FIN or a reset for s, or the session's connection has
// ended (then on a goroutine of the session's, with the other readers
// parked on it, a few at a time). The reader holds no goroutine
// meanwhile, and s gives back its receive buffer. Park reports false,
// and records nothing, once the connection has ended. A reader parks
// first and then looks at Ready, so that a frame is either seen by that
// look or wakes it afterwards: none is missed.
func (s *Stream) Park(w Waker) bool {
	if s.sess.watch == nil || !s.sess.watch.add(s.st.StreamID(), w) {
		return false
	}
	// An idle stream gives back its receive buffer: yamux keeps it at the
	// size of the largest burst otherwise.
	s.st.Shrink()
	return true
}

// Unpark takes w back; it reports whether w was parked on s, in which
// case the caller now carries it on.
func (s *Stream) Unpark(w Waker) bool {
	return s.sess.watch != nil && s.sess.watch.remove(s.st.StreamID(), w)
}

// Ready reports whether a read of s would not block: data is buffered,
// or the stream has ended or failed.
func (s *Stream) Ready() bool {
	s.st.SetReadDeadline(time.Unix(1, 0))
	_, err := s.st.Read(nil)
	s.st.SetReadDeadline(time.Time{})
	return !errors.Is(err, yamux.ErrTimeout)
}

// Open opens a stream on sess, sends h and waits up to timeout for the
// peer's reply. On success the stream is ready for payload; on failure it
// is closed and the error is a *RemoteError when the peer refused.
func Open(sess *Session, h Header, timeout time.Duration) (*Stream, error) {
	st, err := sess.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("opening stream: %w", err)
	}
	if err := WriteHeader(st, h); err != nil {
		st.Close()
		return nil, fmt.Errorf("sending stream header: %w", err)
	}
	st.SetReadDeadline(time.Now().Add(timeout))
	if err := ReadReply(st); err != nil {
		st.Close()
		return nil, err
	}
	st.SetReadDeadline(time.Time{})
	return st, nil
}

// ReadHeaderTimeout reads a stream's header, failing if it does not arrive
// within timeout so that a peer cannot hold streams open for free.
func ReadHeaderTimeout(st *Stream, timeout time.Duration) (Header, error) {
	st.SetReadDeadline(time.Now().Add(timeout))
	h, err := ReadHeader(st)
	st.SetReadDeadline(time.Time{})
	return h, err
}

// Ping measures the round trip to the peer.
func (s *Session) Ping() (time.Duration, error) { return s.ys.Ping() }

package relay

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/burrowtun/burrow/mux"
)

// A direction of a Pipe or Splice holds no buffer while its source is
// idle (see waitData). When data comes, it reads into a small pooled
// buffer, and takes a large one only when a read fills the small one, so
// a few bytes (a keystroke, a request) do not cost a large buffer and a
// bulk transfer still moves in large reads. Either is given back after
// burstIdle without a byte.
const (
	smallBufSize = 4 << 10
	burstIdle    = 200 * time.Millisecond
)

// idleBufSize is the buffer a direction waits with when its source cannot
// wait for data without one.
const idleBufSize = 1 << 10

var (
	smallBufs = sync.Pool{New: func() any { b := make([]byte, smallBufSize); return &b }}
	copyBufs  = newBufPool(mux.DefaultCopyBuffer) // a nil Parking's, and most others'
)

func newBufPool(size int) *sync.Pool {
	return &sync.Pool{New: func() any { b := make([]byte, size); return &b }}
}

// clampCopyBuffer returns n within mux.MinCopyBuffer and
// mux.MaxCopyBuffer, or mux.DefaultCopyBuffer for 0.
func clampCopyBuffer(n int) int {
	if n == 0 {
		return mux.DefaultCopyBuffer
	}
	return min(max(n, mux.MinCopyBuffer), mux.MaxCopyBuffer)
}

// halfCloser is a connection whose write side can be closed on its own:
// *net.TCPConn and *net.UnixConn.
type halfCloser interface {
	CloseWrite() error
}

// Pipe copies between a and b in both directions until both have reached
// EOF or either fails, then closes both. An EOF in one direction is passed
// on as a half-close (FIN), so protocols that signal the end of a request
// by shutting down their write side keep working; a failure, or a stream
// cut short by the end of its session, resets both (see reset), so that
// neither side takes a cut connection for a complete one. It returns the
// bytes copied each way. It is Parking.Splice on a nil Parking waited
// for, with the caller's goroutine, which would otherwise only wait,
// carrying b to a.
func Pipe(a, b io.ReadWriteCloser) (aToB, bToA int64) {
	done := make(chan struct{})
	var p *Parking // the caller's goroutine waits anyway
	s := p.newSplice(a, b, func(int64, int64) { close(done) })
	go s.wait(&s.ab)
	for {
		waited, err := waitData(s.ba.src)
		if !s.ba.step(waited, err) {
			break
		}
	}
	s.end()
	<-done
	return s.ab.n, s.ba.n
}

// Splice is Pipe without the wait: it returns at once, and once both
// directions have ended and both ends are closed it calls done (when not
// nil), on a goroutine of the splice, with the bytes copied each way. An
// owner that must wait for the splice waits for done.
//
// A direction that has been idle for burstIdle is parked on p (see
// Parking) rather than waiting on a goroutine. A nil p parks nothing: an
// idle direction then costs one goroutine blocked where it holds no
// buffer (see waitData), with the smallest stack a goroutine has. A
// goroutine keeps most of the stack its deepest call grew (dialing, a
// burst of writes): a stack shrinks only by halves, at a garbage
// collection, and only while three quarters of it are unused. So the
// caller's goroutine does not take part, each wait starts on a new
// goroutine, in a shallow frame, and the copying that follows it runs on
// that goroutine, which hands the next wait on to a new one.
//
// The end of ctx closes a and b, which ends both directions: a direction
// blocked writing to a peer that stopped reading, or parked, would not
// end otherwise. a and b must not be closed by anyone else while the
// splice runs. The splices of one context, on one Parking, end through a
// single context.AfterFunc, which aborts them a few at a time (see
// mux.Teardown).
func (p *Parking) Splice(ctx context.Context, a, b io.ReadWriteCloser, done func(aToB, bToA int64)) {
	var leave func()
	s := p.newSplice(a, b, func(aToB, bToA int64) {
		leave()
		if done != nil {
			done(aToB, bToA)
		}
	})
	leave = p.join(ctx, s)
	s.start()
}

func (p *Parking) newSplice(a, b io.ReadWriteCloser, done func(aToB, bToA int64)) *splice {
	s := &splice{done: done, p: p}
	s.ab = half{s: s, dst: b, src: a}
	s.ba = half{s: s, dst: a, src: b}
	s.ab.setParker()
	s.ba.setParker()
	s.running.Store(2)
	return s
}

type splice struct {
	ab, ba  half
	running atomic.Int32 // directions not yet ended
	done    func(aToB, bToA int64)
	p       *Parking
}

// start carries both directions on from now on. Each starts as a burst,
// reading with a pooled buffer, and parks only once it has been idle for
// burstIdle: a new connection's first exchange does not pay for parking
// and waking (in paired runs, parking at once made connect + one round
// trip + close about an eighth slower).
func (s *splice) start() {
	go s.copy(&s.ab, true, nil)
	go s.copy(&s.ba, true, nil)
}

// next parks h, or starts a goroutine that waits for h's source.
//
// Once h is recorded by its parker, a wake-up may come at any time, even
// before next has looked at whether h's source is ready already. h.state
// makes sure only one goroutine carries h on: a wake-up that comes while
// next is still parking h leaves h to next.
func (s *splice) next(h *half) {
	if h.later {
		h.setParker()
	}
	if pk := h.parker(); pk != nil && !h.stay.Load() {
		h.state.Store(parking)
		if pk.park(h) {
			ready := h.stay.Load() || pk.ready()
			if h.state.CompareAndSwap(parking, parked) && (!ready || !pk.unpark(h)) {
				return // parked; or woken since, and carried on by the wake
			}
		}
		h.state.Store(running)
	}
	go s.wait(h)
}

// States of a half's parking.
const (
	running int32 = iota
	parking       // next is parking it
	parked
	wokenParking // woken while next was parking it: next carries it on
)

// Wake carries h on, taken back from its parker (by whoever woke it):
// its source may have something, or is closed.
func (h *half) Wake() {
	if h.state.CompareAndSwap(parking, wokenParking) {
		return
	}
	h.state.Store(running)
	go h.s.wait(h)
}

// CarryOn is Wake on the caller's goroutine, which runs h from then on.
func (h *half) CarryOn() {
	if h.state.CompareAndSwap(parking, wokenParking) {
		return
	}
	h.state.Store(running)
	h.s.wait(h)
}

// wait is a goroutine of s, blocked for as long as h's source is idle.
func (s *splice) wait(h *half) {
	waited, err := waitData(h.src)
	s.copy(h, waited, err)
}

// copy copies what h's source has after a wait, then starts the next
// wait or ends h's direction. It is not inlined so that its frame is not
// part of wait's.
//
//go:noinline
func (s *splice) copy(h *half, waited bool, err error) {
	if h.step(waited, err) {
		s.next(h)
		return
	}
	s.end()
}

func (s *splice) other(h *half) *half {
	if h == &s.ab {
		return &s.ba
	}
	return &s.ab
}

// abort resets both ends, so that both directions end soon: a direction
// parked is woken to find its source closed, one copying fails. The
// connection is cut, and its ends learn so (see reset).
func (s *splice) abort() {
	s.ab.stay.Store(true)
	s.ba.stay.Store(true)
	ab := s.ab.unpark()
	ba := s.ba.unpark()
	reset(s.ab.src)
	reset(s.ab.dst)
	if ab {
		s.ab.Wake()
	}
	if ba {
		s.ba.Wake()
	}
}

// end is called as each direction ends; after the second it closes both
// ends and calls done.
func (s *splice) end() {
	if s.running.Add(-1) > 0 {
		return
	}
	s.ab.src.Close()
	s.ab.dst.Close()
	if s.done != nil {
		s.done(s.ab.n, s.ba.n)
	}
}

// half is one direction of a Splice.
type half struct {
	s        *splice
	dst, src io.ReadWriteCloser
	n        int64        // bytes copied
	idle     []byte       // the buffer of a source that cannot wait without one
	pk       atomic.Value // how src parks (a parker), once known
	later    bool         // src may become parkable (see setParker); the runner's own
	stay     atomic.Bool  // never park again: src is being closed
	state    atomic.Int32 // running, parking, parked or wokenParking
}

// setParker finds how h's source parks. A source that cannot park yet
// but may later (an EarlyStream before its reply) is looked at again
// each time h would park.
func (h *half) setParker() {
	pk, later := h.s.p.parker(h.src)
	if pk != nil {
		h.pk.Store(pk)
	}
	h.later = later
}

// parker is how h's source parks, or nil.
func (h *half) parker() parker {
	pk, _ := h.pk.Load().(parker)
	return pk
}

// unpark takes h back from its parker; it reports whether h was parked,
// and is now the caller's to carry on.
func (h *half) unpark() bool {
	pk := h.parker()
	return pk != nil && pk.unpark(h)
}

// step copies what src has once waitData has returned waited and err,
// until src has been quiet for burstIdle. It reports false once src has
// ended, and dst is half-closed, or either end failed, and both are reset
// so that the other direction does not wait forever and both sides learn
// of the failure.
func (h *half) step(waited bool, err error) (more bool) {
	if err == nil {
		if err = h.burst(waited); err == nil {
			return true
		}
	}
	// h.dst is the other direction's source. Closed, even for writing
	// only, it may end without anything a parker would see (yamux ends a
	// stream whose peer does not close it in time): the other direction
	// goes on unparked from now on. When parked, it is taken back before
	// the ends are closed (a parker may know a socket by its descriptor)
	// and woken after.
	o := h.s.other(h)
	o.stay.Store(true)
	parked := o.unpark()
	switch {
	case err != io.EOF || cutShort(h.src):
		// A failure, here or at the far end: it reaches the other side
		// as one (see reset), rather than as an end of data that an
		// application could take for all there was.
		reset(h.dst)
		reset(h.src)
	case sessionEnded(h.src):
		// All the peer sent has come, but nothing can go back: the
		// splice ends whole rather than leave dst half-closed, waiting
		// on a peer that may never write or close. A plain close sends
		// what dst holds, then a FIN.
		h.dst.Close()
		h.src.Close()
	default:
		closeWrite(h.dst)
	}
	if parked {
		o.Wake()
	}
	return false
}

// cutShort reports whether the io.EOF that r returned is not the end of
// what its peer sent: r is a yamux stream whose session ended before the
// peer closed it. yamux ends its reads with io.EOF then, as it does after
// the peer's FIN.
func cutShort(r io.Reader) bool {
	switch st := r.(type) {
	case *mux.Stream:
		return !st.RemoteClosed()
	case *mux.EarlyStream:
		return !st.RemoteClosed()
	}
	return false
}

// reset closes c as a failed connection ends. A TCP connection is closed
// with an RST (SO_LINGER 0), which drops what it had yet to send, so that
// the application reads "connection reset" rather than a FIN after a
// truncated stream, which for a download without a length, or an upload
// the far end takes whole, would look complete. A stream is reset
// (mux.Stream.Reset), which the far end's splice passes on the same way.
// Anything else is closed.
func reset(c io.Closer) {
	switch c := c.(type) {
	case interface{ SetLinger(sec int) error }:
		c.SetLinger(0)
	case interface{ Reset() error }:
		c.Reset()
	}
	c.Close()
}

// sessionEnded reports whether r is a yamux stream whose session has
// ended.
func sessionEnded(r io.Reader) bool {
	switch st := r.(type) {
	case *mux.Stream:
		return st.Session().IsClosed()
	case *mux.EarlyStream:
		if a, _ := st.Accepted(); a != nil {
			return a.Session().IsClosed()
		}
	}
	return false
}

// burst copies until src has been quiet for burstIdle (nil), has ended
// (io.EOF) or either end failed.
func (h *half) burst(waited bool) error {
	d, ok := h.src.(deadliner)
	if !ok {
		// Nothing can end a burst: one copy to the end.
		pool := h.s.p.copyBufs()
		bp := pool.Get().(*[]byte)
		n, err := io.CopyBuffer(writerOnly{h.dst}, readerOnly{h.src}, (*bp)[:cap(*bp)])
		pool.Put(bp)
		h.n += n
		if err == nil {
			err = io.EOF
		}
		return err
	}
	if !waited {
		if h.idle == nil {
			h.idle = make([]byte, idleBufSize)
		}
		n, err := h.src.Read(h.idle)
		if n > 0 {
			if _, err := h.dst.Write(h.idle[:n]); err != nil {
				return err
			}
			h.n += int64(n)
		}
		if err != nil {
			return err
		}
	}
	n, err := burst(h.dst, h.src, d, h.s.p.copyBufs())
	h.n += n
	return err
}

// deadliner is a source whose reads can time out.
type deadliner interface {
	SetReadDeadline(time.Time) error
}

// waitData blocks until src has data to read, has reached EOF (io.EOF)
// or failed, without holding a buffer. waited is false, at once, when
// src cannot wait that way.
func waitData(src io.Reader) (waited bool, err error) {
	if e, ok := src.(*mux.EarlyStream); ok {
		// Once answered, an EarlyStream reads its stream as it is.
		st, err := e.Settled()
		if err != nil {
			return true, err
		}
		src = st
	}
	if st, ok := src.(*mux.Stream); ok {
		// An empty Read waits as any Read does (for data, the peer's FIN
		// or reset, the session's end or the read deadline) and takes
		// nothing: with data buffered it returns 0, nil.
		_, err := st.Read(nil)
		return true, err
	}
	return waitConn(src)
}

// burst copies with pooled buffers until the source has been quiet for
// burstIdle (nil error) or ends (io.EOF) or fails: small ones first, from
// large when a read fills a small one.
func burst(dst io.Writer, src io.Reader, d deadliner, large *sync.Pool) (int64, error) {
	pool := &smallBufs
	bp := pool.Get().(*[]byte)
	defer func() { pool.Put(bp) }()
	defer d.SetReadDeadline(time.Time{})
	var total int64
	for {
		d.SetReadDeadline(time.Now().Add(burstIdle))
		n, err := src.Read((*bp)[:cap(*bp)])
		if n > 0 {
			if _, werr := dst.Write((*bp)[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if err != nil {
			if isTimeout(err) {
				return total, nil
			}
			return total, err
		}
		if n == cap(*bp) && pool == &smallBufs {
			// More is waiting: read it in large pieces.
			pool.Put(bp)
			pool = large
			bp = pool.Get().(*[]byte)
		}
	}
}

func closeWrite(c io.Closer) {
	switch c := c.(type) {
	case halfCloser:
		c.CloseWrite()
	case *mux.Stream:
		// A mux stream's Close is a half-close: it sends FIN and
		// keeps reading until the peer closes too.
		c.Close()
	default:
		c.Close()
	}
}

// readerOnly and writerOnly hide ReadFrom/WriteTo so io.CopyBuffer uses the
// pooled buffer rather than allocating its own.
type readerOnly struct{ io.Reader }
type writerOnly struct{ io.Writer }

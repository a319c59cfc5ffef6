package udp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/burrowtun/burrow/mux"
	"github.com/burrowtun/burrow/relay"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// MaxDatagram is the largest datagram a UDP stream carries.
const MaxDatagram = 65535

// Defaults for UDP relaying.
const (
	DefaultIdle     = 60 * time.Second
	DefaultMaxFlows = 16384
	// udpQueueLen bounds the datagrams waiting for a stream that is slower
	// than its sender; beyond it datagrams are dropped and counted, as a
	// router would.
	udpQueueLen = 512
	// udpQueueBytes bounds the bytes those datagrams may hold.
	udpQueueBytes = 1 << 20
	// udpSocketBuffer is asked of the kernel for every UDP socket: a burst
	// of large datagrams must not overflow the default ~200 KiB.
	udpSocketBuffer = 4 << 20
)

// writeDatagram writes p as one frame, length (2 bytes, big endian) then
// payload, in a single Write so frames never interleave.
func writeDatagram(w io.Writer, p []byte) error {
	if len(p) > MaxDatagram {
		return fmt.Errorf("datagram of %d bytes is larger than %d", len(p), MaxDatagram)
	}
	bp := datagramBufs.Get().(*[]byte)
	defer datagramBufs.Put(bp)
	b := (*bp)[:2+len(p)]
	binary.BigEndian.PutUint16(b, uint16(len(p)))
	copy(b[2:], p)
	_, err := w.Write(b)
	return err
}

// readDatagram reads one frame into buf, which must hold MaxDatagram
// bytes, and returns the payload, a slice of buf.
func readDatagram(r io.Reader, buf []byte) ([]byte, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	size := int(binary.BigEndian.Uint16(n[:]))
	if size > len(buf) {
		return nil, fmt.Errorf("datagram of %d bytes does not fit a %d-byte buffer", size, len(buf))
	}
	if _, err := io.ReadFull(r, buf[:size]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // the length said more was coming
		}
		return nil, fmt.Errorf("reading datagram: %w", err)
	}
	return buf[:size], nil
}

var datagramBufs = sync.Pool{New: func() any { b := make([]byte, 2+MaxDatagram); return &b }}

// udpQueue carries datagrams from a socket reader to a stream writer. It
// never blocks the reader: when it holds udpQueueLen datagrams or
// udpQueueBytes bytes, the datagram is dropped and counted.
type udpQueue struct {
	ch      chan []byte
	bytes   atomic.Int64
	dropped atomic.Int64
}

func newUDPQueue() *udpQueue { return &udpQueue{ch: make(chan []byte, udpQueueLen)} }

func (q *udpQueue) push(p []byte) bool {
	if q.bytes.Add(int64(len(p))) > udpQueueBytes {
		q.bytes.Add(-int64(len(p)))
		q.dropped.Add(1)
		return false
	}
	select {
	case q.ch <- append([]byte(nil), p...):
		return true
	default:
		q.bytes.Add(-int64(len(p)))
		q.dropped.Add(1)
		return false
	}
}

// pop takes a pushed datagram's bytes off the bound.
func (q *udpQueue) pop(p []byte) { q.bytes.Add(-int64(len(p))) }

// drain writes queued datagrams to st until the queue is closed or a
// write fails.
func (q *udpQueue) drain(st io.Writer, touch func()) error {
	for p := range q.ch {
		q.pop(p)
		if err := writeDatagram(st, p); err != nil {
			for p := range q.ch { // release what is left
				q.pop(p)
			}
			return err
		}
		touch()
	}
	return nil
}

// activity tracks when a flow last carried a datagram.
type activity struct{ last atomic.Int64 }

func (a *activity) touch()                 { a.last.Store(time.Now().UnixNano()) }
func (a *activity) idleFor() time.Duration { return time.Since(time.Unix(0, a.last.Load())) }

// Stats counts what a UDP flow or listener carried and dropped.
type Stats struct {
	// Sent and Received count datagrams to and from the target;
	// SentBytes and ReceivedBytes their payload bytes.
	Sent, Received, Dropped  int64
	SentBytes, ReceivedBytes int64
}

// Serve answers a stream that asked for a UDP flow to target: it dials
// a connected UDP socket, replies, and relays framed datagrams both ways
// until the stream closes or nothing has moved for idle.
func Serve(ctx context.Context, st net.Conn, dial relay.DialFunc, target string, idle time.Duration, dialTimeout time.Duration) (Stats, error) {
	if idle <= 0 {
		idle = DefaultIdle
	}
	conn, err := relay.DialTarget(ctx, dial, "udp", target, dialTimeout)
	if err != nil {
		mux.WriteReply(st, err)
		st.Close()
		return Stats{}, err
	}
	defer conn.Close()
	if uc, ok := conn.(*net.UDPConn); ok {
		growUDPBuffers(uc)
	}
	if err := mux.WriteReply(st, nil); err != nil {
		st.Close()
		return Stats{}, err
	}
	var (
		act                     activity
		stats                   Stats
		sent, sentBytes         atomic.Int64
		received, receivedBytes atomic.Int64
		q                       = newUDPQueue()
		wg                      sync.WaitGroup
	)
	act.touch()
	stop := context.AfterFunc(ctx, func() { st.Close(); conn.Close() })
	defer stop()

	wg.Add(2)
	go func() { // stream -> socket
		defer wg.Done()
		defer conn.Close()
		buf := make([]byte, MaxDatagram)
		for {
			p, err := readDatagram(st, buf)
			if err != nil {
				return
			}
			act.touch()
			if _, err := conn.Write(p); err == nil {
				sent.Add(1)
				sentBytes.Add(int64(len(p)))
			}
		}
	}()
	go func() { // queue -> stream
		defer wg.Done()
		q.drain(st, act.touch)
		st.Close()
	}()
	// socket -> queue, here, with the idle check on the read deadline.
	buf := make([]byte, MaxDatagram)
	for {
		conn.SetReadDeadline(time.Now().Add(idle - act.idleFor()))
		n, err := conn.Read(buf)
		if err != nil {
			if isTimeout(err) && act.idleFor() < idle {
				continue
			}
			break
		}
		act.touch()
		if q.push(buf[:n]) {
			received.Add(1)
			receivedBytes.Add(int64(n))
		}
	}
	close(q.ch)
	st.Close()
	// Close only ends our side of a yamux stream: unblock our reader too,
	// so the flow ends here even if the opener keeps its side open.
	st.SetReadDeadline(time.Now())
	conn.Close()
	wg.Wait()
	stats.Sent, stats.Received, stats.Dropped = sent.Load(), received.Load(), q.dropped.Load()
	stats.SentBytes, stats.ReceivedBytes = sentBytes.Load(), receivedBytes.Load()
	return stats, nil
}

// Listener serves a local UDP socket: each source address is a flow,
// carried over its own stream, opened by Open on the flow's first
// datagram. Replies from the stream go back to that source.
type Listener struct {
	// Conn is the listening socket.
	Conn *net.UDPConn
	// Open opens the stream for a new flow; the header has been
	// exchanged when it returns.
	Open func(ctx context.Context) (net.Conn, error)
	// Idle ends a flow after this long without a datagram either way.
	Idle time.Duration
	// MaxFlows bounds concurrent flows; datagrams of new flows beyond it
	// are dropped and counted.
	MaxFlows int
	// Logger reports flows and drops.
	Logger *slog.Logger

	dropped atomic.Int64
}

// Dropped reports datagrams dropped so far because a bound was reached.
func (l *Listener) Dropped() int64 { return l.dropped.Load() }

// Serve reads datagrams until ctx ends or the socket fails, then closes
// every flow and waits for them.
func (l *Listener) Serve(ctx context.Context) error {
	idle, maxFlows, log := l.Idle, l.MaxFlows, l.Logger
	if idle <= 0 {
		idle = DefaultIdle
	}
	if maxFlows <= 0 {
		maxFlows = DefaultMaxFlows
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	growUDPBuffers(l.Conn)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { l.Conn.Close() })
	defer stop()

	type flow struct {
		q   *udpQueue
		act activity
	}
	var (
		mu    sync.Mutex
		flows = map[netip.AddrPort]*flow{}
		wg    sync.WaitGroup
	)
	defer wg.Wait()
	defer cancel()

	buf := make([]byte, MaxDatagram)
	for {
		n, from, err := l.Conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		mu.Lock()
		f := flows[from]
		if f == nil {
			if len(flows) >= maxFlows {
				mu.Unlock()
				if l.dropped.Add(1) == 1 {
					log.Warn("udp datagram dropped: too many flows", "max_flows", maxFlows, "source", from.String())
				}
				continue
			}
			f = &flow{q: newUDPQueue()}
			f.act.touch()
			flows[from] = f
			wg.Add(1)
			// A flow is forgotten as soon as it decides to end, before
			// its stream is closed: the source's next datagram opens a
			// new flow rather than going down with the old one.
			forget := func() {
				mu.Lock()
				if flows[from] == f {
					delete(flows, from)
				}
				mu.Unlock()
			}
			go func() {
				defer wg.Done()
				stats := l.runFlow(ctx, from, f.q, &f.act, idle, forget, log)
				forget()
				l.dropped.Add(stats.Dropped)
			}()
		}
		mu.Unlock()
		f.act.touch()
		f.q.push(buf[:n])
	}
}

// runFlow carries one flow: queue -> stream, stream -> socket (to from),
// until the stream ends or the flow is idle. It calls forget once the
// flow has ended, before it closes the stream.
func (l *Listener) runFlow(ctx context.Context, from netip.AddrPort, q *udpQueue, act *activity, idle time.Duration, forget func(), log *slog.Logger) Stats {
	var stats Stats
	log = log.With("source", from.String())
	st, err := l.Open(ctx)
	if err != nil {
		log.Warn("udp flow refused", "err", err)
		// Keep the flow's entry until idle so a refused flow does not
		// open a stream per datagram.
		for act.idleFor() < idle && ctx.Err() == nil {
			sleepCtx(ctx, idle-act.idleFor())
		}
		stats.Dropped = q.dropped.Load() + int64(len(q.ch))
		for len(q.ch) > 0 {
			q.pop(<-q.ch)
		}
		return stats
	}
	var received atomic.Int64
	readDone := make(chan struct{})
	go func() { // stream -> socket, until the far end ends the flow
		defer close(readDone)
		buf := make([]byte, MaxDatagram)
		for {
			p, err := readDatagram(st, buf)
			if err != nil {
				return
			}
			act.touch()
			if _, err := l.Conn.WriteToUDPAddrPort(p, from); err == nil {
				received.Add(1)
			}
		}
	}()
	stop := make(chan struct{})
	writeDone := make(chan struct{})
	go func() { // queue -> stream, until stopped
		defer close(writeDone)
		for {
			select {
			case p := <-q.ch:
				q.pop(p)
				if err := writeDatagram(st, p); err != nil {
					return
				}
				stats.Sent++
				act.touch()
			case <-stop:
				return
			}
		}
	}()
	// The flow ends when it has been idle, when the far end ends it (its
	// idle timeout may be shorter), when the stream fails, or with ctx.
	for {
		wait := idle - act.idleFor()
		if wait <= 0 {
			break
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
			continue
		case <-readDone:
		case <-writeDone:
		case <-ctx.Done():
		}
		t.Stop()
		break
	}
	forget()
	close(stop)
	st.Close()
	st.SetReadDeadline(time.Now())
	<-writeDone
	<-readDone
	// What is still queued will not be sent.
	left := int64(len(q.ch))
	for len(q.ch) > 0 {
		q.pop(<-q.ch)
	}
	q.dropped.Add(left)
	stats.Received = received.Load()
	stats.Dropped = q.dropped.Load()
	if stats.Dropped > 0 {
		log.Warn("udp flow dropped datagrams: the tunnel was slower than the sender", "dropped", stats.Dropped)
	}
	return stats
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// sleepCtxDone sleeps for d; it returns false early if ctx ends or done
// is closed.
func sleepCtxDone(ctx context.Context, d time.Duration, done <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-done:
		return false
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

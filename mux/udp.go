package mux

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
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
	DefaultUDPIdle     = 60 * time.Second
	DefaultUDPMaxFlows = 16384
	// udpQueueLen bounds the datagrams waiting for a stream that is slower
	// than its sender; beyond it datagrams are dropped and counted, as a
	// router would.
	udpQueueLen = 512
)

// WriteDatagram writes p as one frame, length (2 bytes, big endian) then
// payload, in a single Write so frames never interleave.
func WriteDatagram(w io.Writer, p []byte) error {
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

// ReadDatagram reads one frame into buf, which must hold MaxDatagram
// bytes, and returns the payload, a slice of buf.
func ReadDatagram(r io.Reader, buf []byte) ([]byte, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	size := int(binary.BigEndian.Uint16(n[:]))
	if size > len(buf) {
		return nil, fmt.Errorf("datagram of %d bytes does not fit a %d-byte buffer", size, len(buf))
	}
	if _, err := io.ReadFull(r, buf[:size]); err != nil {
		return nil, fmt.Errorf("reading datagram: %w", io.ErrUnexpectedEOF)
	}
	return buf[:size], nil
}

var datagramBufs = sync.Pool{New: func() any { b := make([]byte, 2+MaxDatagram); return &b }}

// udpQueue carries datagrams from a socket reader to a stream writer. It
// never blocks the reader: when full, the datagram is dropped and counted.
type udpQueue struct {
	ch      chan *[]byte
	dropped atomic.Int64
}

func newUDPQueue() *udpQueue { return &udpQueue{ch: make(chan *[]byte, udpQueueLen)} }

func (q *udpQueue) push(p []byte) bool {
	bp := datagramBufs.Get().(*[]byte)
	*bp = append((*bp)[:0], p...)
	select {
	case q.ch <- bp:
		return true
	default:
		datagramBufs.Put(bp)
		q.dropped.Add(1)
		return false
	}
}

// drain writes queued datagrams to st until the queue is closed or a
// write fails.
func (q *udpQueue) drain(st io.Writer, touch func()) error {
	for bp := range q.ch {
		err := WriteDatagram(st, *bp)
		*bp = (*bp)[:cap(*bp)]
		datagramBufs.Put(bp)
		if err != nil {
			for bp := range q.ch { // release what is left
				datagramBufs.Put(bp)
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

// UDPStats counts what a UDP flow or listener carried and dropped.
type UDPStats struct {
	Sent, Received, Dropped int64
}

// ServeUDP answers a stream that asked for a UDP flow to target: it dials
// a connected UDP socket, replies, and relays framed datagrams both ways
// until the stream closes or nothing has moved for idle.
func ServeUDP(ctx context.Context, st Stream, dial DialFunc, target string, idle time.Duration, dialTimeout time.Duration) (UDPStats, error) {
	if idle <= 0 {
		idle = DefaultUDPIdle
	}
	conn, err := DialTarget(ctx, dial, "udp", target, dialTimeout)
	if err != nil {
		WriteReply(st, err)
		st.Close()
		return UDPStats{}, err
	}
	defer conn.Close()
	if err := WriteReply(st, nil); err != nil {
		st.Close()
		return UDPStats{}, err
	}
	var (
		act      activity
		stats    UDPStats
		sent     atomic.Int64
		received atomic.Int64
		q        = newUDPQueue()
		wg       sync.WaitGroup
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
			p, err := ReadDatagram(st, buf)
			if err != nil {
				return
			}
			act.touch()
			if _, err := conn.Write(p); err == nil {
				sent.Add(1)
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
		}
	}
	close(q.ch)
	st.Close()
	conn.Close()
	wg.Wait()
	stats.Sent, stats.Received, stats.Dropped = sent.Load(), received.Load(), q.dropped.Load()
	return stats, nil
}

// UDPListener serves a local UDP socket: each source address is a flow,
// carried over its own stream, opened by Open on the flow's first
// datagram. Replies from the stream go back to that source.
type UDPListener struct {
	// Conn is the listening socket.
	Conn *net.UDPConn
	// Open opens the stream for a new flow; the header has been
	// exchanged when it returns.
	Open func(ctx context.Context) (Stream, error)
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
func (l *UDPListener) Dropped() int64 { return l.dropped.Load() }

// Serve reads datagrams until ctx ends or the socket fails, then closes
// every flow and waits for them.
func (l *UDPListener) Serve(ctx context.Context) error {
	idle, maxFlows, log := l.Idle, l.MaxFlows, l.Logger
	if idle <= 0 {
		idle = DefaultUDPIdle
	}
	if maxFlows <= 0 {
		maxFlows = DefaultUDPMaxFlows
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
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
			go func() {
				defer wg.Done()
				stats := l.runFlow(ctx, from, f.q, &f.act, idle, log)
				mu.Lock()
				delete(flows, from)
				mu.Unlock()
				l.dropped.Add(stats.Dropped)
			}()
		}
		mu.Unlock()
		f.act.touch()
		f.q.push(buf[:n])
	}
}

// runFlow carries one flow: queue -> stream, stream -> socket (to from),
// until the stream ends or the flow is idle.
func (l *UDPListener) runFlow(ctx context.Context, from netip.AddrPort, q *udpQueue, act *activity, idle time.Duration, log *slog.Logger) UDPStats {
	var stats UDPStats
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
		return stats
	}
	var wg sync.WaitGroup
	wg.Add(1)
	var received atomic.Int64
	go func() { // stream -> socket
		defer wg.Done()
		buf := make([]byte, MaxDatagram)
		for {
			p, err := ReadDatagram(st, buf)
			if err != nil {
				return
			}
			act.touch()
			if _, err := l.Conn.WriteToUDPAddrPort(p, from); err == nil {
				received.Add(1)
			}
		}
	}()
	done := make(chan struct{})
	go func() { // queue -> stream; the queue is never closed, so stop on done
		defer close(done)
		for {
			select {
			case bp := <-q.ch:
				err := WriteDatagram(st, *bp)
				datagramBufs.Put(bp)
				if err != nil {
					return
				}
				stats.Sent++
				act.touch()
			case <-ctx.Done():
				return
			}
			if act.idleFor() >= idle {
				return
			}
		}
	}()
	// Idle watchdog.
	for {
		wait := idle - act.idleFor()
		if wait <= 0 {
			break
		}
		if !sleepCtxDone(ctx, wait, done) {
			break
		}
	}
	st.Close()
	<-done
	wg.Wait()
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

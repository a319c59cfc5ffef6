package mux

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// countingListener counts the Write calls and bytes of every connection it
// accepts: below TLS, each is one write to the TCP socket. With a delay,
// each write takes that much longer, as on a link slower than the writers.
type countingListener struct {
	net.Listener
	writes atomic.Int64
	bytes  atomic.Int64
	delay  time.Duration
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, l: l}, nil
}

type countingConn struct {
	net.Conn
	l   *countingListener
	n   *atomic.Int64  // also counts writes, when set
	tap *recordCounter // also counts the TLS records written, when set
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.l.writes.Add(1)
	c.l.bytes.Add(int64(len(p)))
	if c.n != nil {
		c.n.Add(1)
	}
	if c.tap != nil {
		c.tap.Write(p)
	}
	if c.l.delay > 0 {
		time.Sleep(c.l.delay)
	}
	return c.Conn.Write(p)
}

// recordCounter counts the TLS records in the bytes written to it: each
// record is a 5-byte header (type, version, length) and length bytes.
type recordCounter struct {
	mu      sync.Mutex
	hdr     []byte // a header's bytes read so far
	left    int    // bytes of the current record's body still to come
	records int
}

func (r *recordCounter) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		if r.left > 0 {
			n := min(r.left, len(p))
			r.left -= n
			p = p[n:]
			continue
		}
		n := min(5-len(r.hdr), len(p))
		r.hdr = append(r.hdr, p[:n]...)
		p = p[n:]
		if len(r.hdr) == 5 {
			r.records++
			r.left = int(binary.BigEndian.Uint16(r.hdr[3:]))
			r.hdr = r.hdr[:0]
		}
	}
	return n, nil
}

func (r *recordCounter) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.records
}

// TestCoalescing measures how many TCP writes the server makes for a burst
// of small yamux frames. yamux writes each frame as two calls (header, then
// body); sent apart, every call would be a WebSocket message, a TLS record
// and a syscall of its own.
func TestCoalescing(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			counter := &countingListener{}
			ts := startTunnelServer(t, serverOptions{tr: tr, wrap: func(l net.Listener) net.Listener {
				counter.Listener = l
				return counter
			}})
			client, server := ts.dial(t, nil)
			st, err := client.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			peer, err := server.AcceptStream()
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			st.SetDeadline(time.Now().Add(testTimeout))
			peer.SetDeadline(time.Now().Add(testTimeout))

			const frames, size = 2000, 64
			read := make(chan error, 1)
			go func() {
				n, err := io.Copy(io.Discard, st)
				if err == nil && n != frames*size {
					err = fmt.Errorf("client read %d bytes, want %d", n, frames*size)
				}
				read <- err
			}()

			msg := bytes.Repeat([]byte{'m'}, size)
			writes0, bytes0 := counter.writes.Load(), counter.bytes.Load()
			for range frames {
				if _, err := peer.Write(msg); err != nil {
					t.Fatal(err)
				}
			}
			peer.Close()
			if err := <-read; err != nil {
				t.Fatal(err)
			}
			writes, sent := counter.writes.Load()-writes0, counter.bytes.Load()-bytes0
			t.Logf("%d frames of %d bytes (%d writes into the conn) left in %d TCP writes of %d bytes: %.1f frames per write",
				frames, size, 2*frames, writes, sent, float64(frames)/float64(writes))
			// Header and body apart would be at least 2*frames writes; a
			// few more than frames are the stream's close and window
			// updates.
			if limit := int64(frames + frames/10); writes > limit {
				t.Errorf("%d TCP writes for %d frames (limit %d): a frame's header and body do not leave together", writes, frames, limit)
			}
		})
	}
}

// TestCoalescingStreams measures the server's TCP writes for small frames
// that many streams write at once over a link slower than they are (each
// write takes 200 µs more): frames that wait in yamux's send queue behind
// each other leave together, so there are far fewer writes than frames.
func TestCoalescingStreams(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			counter := &countingListener{delay: 200 * time.Microsecond}
			ts := startTunnelServer(t, serverOptions{tr: tr, wrap: func(l net.Listener) net.Listener {
				counter.Listener = l
				return counter
			}})
			client, server := ts.dial(t, nil)
			const streams, frames, size = 32, 200, 64
			var readers, writers sync.WaitGroup
			errc := make(chan error, 2*streams)
			peers := make([]net.Conn, streams)
			for i := range streams {
				st, peer := acceptedStream(t, client, server)
				defer st.Close()
				defer peer.Close()
				st.SetDeadline(time.Now().Add(testTimeout))
				peer.SetDeadline(time.Now().Add(testTimeout))
				peers[i] = peer
				readers.Go(func() {
					if n, err := io.Copy(io.Discard, st); err != nil || n != frames*size {
						errc <- fmt.Errorf("stream %d: read %d bytes (%v), want %d", i, n, err, frames*size)
					}
				})
			}
			writes0 := counter.writes.Load()
			start := make(chan struct{})
			for _, peer := range peers {
				writers.Go(func() {
					defer peer.Close()
					<-start
					msg := bytes.Repeat([]byte{'m'}, size)
					for range frames {
						if _, err := peer.Write(msg); err != nil {
							errc <- err
							return
						}
					}
				})
			}
			close(start)
			writers.Wait()
			readers.Wait()
			close(errc)
			for err := range errc {
				t.Fatal(err)
			}
			writes := counter.writes.Load() - writes0
			t.Logf("%d streams x %d frames of %d bytes left in %d TCP writes: %.1f frames per write",
				streams, frames, size, writes, float64(streams*frames)/float64(writes))
			// 32 writers each with a frame in the queue: sent one by one,
			// every frame would be a write of its own.
			if limit := int64(streams * frames / 4); writes > limit {
				t.Errorf("%d TCP writes for %d frames (limit %d): queued frames do not leave together", writes, streams*frames, limit)
			}
		})
	}
}

// TestCoalescingAnswers measures the server's TCP writes for its answers
// to a burst of pings, over a link slower than they are (each write takes
// 200 µs more): yamux's send loop writes the answers from a queue of their
// own, which wsConn sees too (Session.SendQueueLen), so they leave
// together rather than one message each.
func TestCoalescingAnswers(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		counter := &countingListener{delay: 200 * time.Microsecond}
		ts := startTunnelServer(t, serverOptions{tr: tr, wrap: func(l net.Listener) net.Listener {
			counter.Listener = l
			return counter
		}})
		client, _ := ts.dial(t, nil)
		const pings = 400
		writes0 := counter.writes.Load()
		errc := make(chan error, pings)
		var wg sync.WaitGroup
		for range pings {
			wg.Go(func() {
				if _, err := client.Ping(); err != nil {
					errc <- err
				}
			})
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Fatal(err)
		}
		writes := counter.writes.Load() - writes0
		t.Logf("the answers to %d pings left in %d TCP writes: %.1f answers per write", pings, writes, float64(pings)/float64(writes))
		if limit := int64(pings / 4); writes > limit {
			t.Errorf("%d TCP writes for the answers to %d pings (limit %d): queued answers do not leave together", writes, pings, limit)
		}
	})
}

// TestCoalescingClose checks, with real yamux sessions, that every frame
// whose Write returned reaches the peer when the session is closed while
// many streams write over a slow link: frames held back for a message (see
// wsConn) leave with the close.
func TestCoalescingClose(t *testing.T) {
	t.Parallel()
	for round := range 3 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			t.Parallel()
			counter := &countingListener{delay: 200 * time.Microsecond}
			ts := startTunnelServer(t, serverOptions{tr: transports[2], wrap: func(l net.Listener) net.Listener {
				counter.Listener = l
				return counter
			}})
			client, server := ts.dial(t, nil)
			const streams, size = 32, 64
			written := make([]atomic.Int64, streams)
			got := make([]int64, streams)
			var readers, writers sync.WaitGroup
			for i := range streams {
				st, peer := acceptedStream(t, client, server)
				st.SetDeadline(time.Now().Add(testTimeout))
				peer.SetDeadline(time.Now().Add(testTimeout))
				readers.Go(func() { got[i], _ = io.Copy(io.Discard, st) })
				writers.Go(func() {
					msg := bytes.Repeat([]byte{'m'}, size)
					for range 100000 { // until the session closes
						if _, err := peer.Write(msg); err != nil {
							return
						}
						written[i].Add(size)
					}
				})
			}
			time.Sleep(time.Duration(10+round*10) * time.Millisecond)
			server.Close()
			writers.Wait()
			readers.Wait()
			for i := range streams {
				if got[i] < written[i].Load() {
					t.Errorf("stream %d: the peer read %d bytes of the %d whose Write returned", i, got[i], written[i].Load())
				}
			}
		})
	}
}

// TestCorkedMessage checks that one bulk frame from the client, a
// WebSocket message that coder/websocket masks and writes in 4 KiB pieces,
// reaches TLS in full-size records (the corkBody above it) and the TCP
// socket in one write when the connection under TLS is a corkConn.
func TestCorkedMessage(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		if !tr.tls {
			continue
		}
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			ts := startTunnelServer(t, serverOptions{tr: tr})
			var writes atomic.Int64
			records := &recordCounter{}
			// The client's connection counted below the cork, as
			// startHTTPTest's transport does it without counting.
			base := ts.Server.Client().Transport.(*http.Transport).Clone()
			base.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				c = &countingConn{Conn: c, l: &countingListener{}, n: &writes, tap: records}
				if tr.batch {
					c = CoalesceWrites(c, 0)
				}
				return c, nil
			}
			ts.client = &http.Client{Transport: base}
			client, server := ts.dial(t, nil)
			st, err := client.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			peer, err := server.AcceptStream()
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			peer.SetDeadline(time.Now().Add(testTimeout))

			const size = DefaultCopyBuffer // a bulk frame, within the initial window
			frame := bytes.Repeat([]byte{'x'}, size)
			send := func() {
				t.Helper()
				got := make(chan error, 1)
				go func() {
					_, err := io.ReadFull(peer, make([]byte, size))
					got <- err
				}()
				if _, err := st.Write(frame); err != nil {
					t.Fatal(err)
				}
				if err := <-got; err != nil {
					t.Fatal(err)
				}
			}
			// The first frame takes crypto/tls past its small records
			// for a connection's first bytes; the second is measured.
			send()
			before, records0 := writes.Load(), records.count()
			send()
			n, recs := writes.Load()-before, records.count()-records0
			t.Logf("one %d-byte frame left the client in %d TLS records and %d TCP writes", size, recs, n)
			// Full records would be size/16 KiB; one more per corkBody
			// batch for the part of a record left at its end.
			if limit := size/(16<<10) + size/bodyBatch + 2; recs > limit {
				t.Errorf("one %d-byte frame took %d TLS records, more than %d: the client's masked 4 KiB pieces are not joined above TLS", size, recs, limit)
			}
			if tr.batch && n != 1 {
				t.Errorf("%d TCP writes for one frame through a corked connection, want 1", n)
			}
			if !tr.batch && n < 8 {
				t.Errorf("only %d TCP writes without corking: the test no longer shows what corking saves", n)
			}
		})
	}
}

// raceEnabled reports whether the test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// wsPair returns both ends of a WebSocket over loopback. Nothing reads the
// server end unless the test does.
func wsPair(t *testing.T) (client, server *websocket.Conn) {
	t.Helper()
	accepted := make(chan *websocket.Conn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- ws
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	client, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		client.CloseNow()
		t.Fatal("websocket.Accept failed")
	}
	t.Cleanup(func() {
		client.CloseNow()
		server.CloseNow()
	})
	return client, server
}

// readMessages reads binary messages from ws until it fails and sends them
// on the returned channel, which it then closes.
func readMessages(ws *websocket.Conn) <-chan []byte {
	msgs := make(chan []byte, 1<<16) // room for every message of a test
	go func() {
		defer close(msgs)
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		for {
			typ, p, err := ws.Read(ctx)
			if err != nil {
				return
			}
			if typ != websocket.MessageBinary {
				p = []byte("non-binary message")
			}
			msgs <- p
		}
	}()
	return msgs
}

// yamuxFrame is a yamux frame header of type typ for stream 1 whose
// length field is n.
func yamuxFrame(typ byte, n int) []byte {
	h := make([]byte, yamuxHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint32(h[4:], 1)
	binary.BigEndian.PutUint32(h[8:], uint32(n))
	return h
}

// TestWSConnMessages checks what goes on the wire: the bytes in order, a
// data frame header in the same message as its body (small bodies and
// large), and every other write a message of its own.
func TestWSConnMessages(t *testing.T) {
	t.Parallel()
	client, server := wsPair(t)
	c := newWSConn(context.Background(), client, nil, nil)
	msgs := readMessages(server)

	const windowUpdate = 1
	var want bytes.Buffer
	var wantMsgs []int // the length of each message
	write := func(p []byte) {
		t.Helper()
		want.Write(p)
		if n, err := c.Write(p); err != nil || n != len(p) {
			t.Fatalf("Write: %d, %v", n, err)
		}
	}
	for i := range 200 {
		size := 1 + i*7%1000
		if i%50 == 25 {
			size = 3*smallMessage + i // several frames in one message
		}
		body := bytes.Repeat([]byte{byte(i)}, size)
		write(yamuxFrame(yamuxTypeData, size))
		write(body)
		wantMsgs = append(wantMsgs, yamuxHeaderSize+size)
		if i%10 == 0 {
			write(yamuxFrame(windowUpdate, 1<<20))
			wantMsgs = append(wantMsgs, yamuxHeaderSize)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	var got bytes.Buffer
	var gotMsgs []int
	for m := range msgs {
		gotMsgs = append(gotMsgs, len(m))
		got.Write(m)
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("the peer received %d bytes that differ from the %d written", got.Len(), want.Len())
	}
	if !slices.Equal(gotMsgs, wantMsgs) {
		t.Errorf("message sizes %v\nwant %v (a data header with its body, anything else alone)", gotMsgs, wantMsgs)
	}
}

// TestWSConnHoldsQueuedFrames checks that small frames written while the
// send queue reports more to come leave together, that a frame with
// nothing queued behind it leaves at once, that held frames leave on their
// own before a large frame, and that Close sends what is still held.
func TestWSConnHoldsQueuedFrames(t *testing.T) {
	t.Parallel()
	client, server := wsPair(t)
	c := newWSConn(context.Background(), client, nil, nil)
	var queued atomic.Int64 // what the fake send queue reports
	c.setQueue(func() int { return int(queued.Load()) })
	msgs := readMessages(server)

	var want bytes.Buffer
	frame := func(size int) {
		t.Helper()
		hdr, body := yamuxFrame(yamuxTypeData, size), bytes.Repeat([]byte{byte(size)}, size)
		want.Write(hdr)
		want.Write(body)
		for _, p := range [][]byte{hdr, body} {
			if n, err := c.Write(p); err != nil || n != len(p) {
				t.Fatalf("Write: %d, %v", n, err)
			}
		}
	}
	const windowUpdate = 1
	var got bytes.Buffer
	expect := func(what string, size int) {
		t.Helper()
		select {
		case m := <-msgs:
			got.Write(m)
			if len(m) != size {
				t.Fatalf("%s: a message of %d bytes, want %d", what, len(m), size)
			}
		case <-time.After(testTimeout):
			t.Fatalf("%s: no message", what)
		}
	}
	nothingYet := func(what string) {
		t.Helper()
		select {
		case m := <-msgs:
			t.Fatalf("%s: a message of %d bytes left while more frames were queued", what, len(m))
		case <-time.After(50 * time.Millisecond):
		}
	}

	// Nothing queued: each frame is a message of its own, at once.
	frame(100)
	expect("a lone frame", yamuxHeaderSize+100)

	// Three frames and a window update behind each other, then the last
	// one with the queue empty: one message.
	queued.Store(3)
	frame(10)
	frame(20)
	want.Write(yamuxFrame(windowUpdate, 1<<20))
	if _, err := c.Write(yamuxFrame(windowUpdate, 1<<20)); err != nil {
		t.Fatal(err)
	}
	nothingYet("queued frames")
	queued.Store(0)
	frame(30)
	expect("frames queued behind each other", 4*yamuxHeaderSize+10+20+30)

	// A queue that never empties: a message leaves once it holds
	// coalesceLimit bytes.
	queued.Store(64)
	var sizes int
	for sizes < coalesceLimit {
		frame(smallMessage)
		sizes += yamuxHeaderSize + smallMessage
	}
	expect("a full message", sizes)

	// Held frames leave on their own before a large frame.
	frame(1)
	frame(2 * smallMessage)
	expect("frames held before a large one", yamuxHeaderSize+1)
	expect("the large frame", yamuxHeaderSize+2*smallMessage)

	// Close sends what is held.
	frame(5)
	nothingYet("a held frame")
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	expect("a frame held at Close", yamuxHeaderSize+5)
	for m := range msgs {
		t.Errorf("a %d-byte message after the last expected one", len(m))
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Errorf("the peer received %d bytes that differ from the %d written", got.Len(), want.Len())
	}
}

// TestWSConnNoAllocs checks that wsConn allocates nothing per message,
// writing data frames small and large (a copy behind the header, or a
// message of several WebSocket frames) or reading them, as a client (which
// masks) and as a server. The count is of the whole process: the reader
// drains the other end meanwhile (and the test is not parallel).
func TestWSConnNoAllocs(t *testing.T) {
	for _, side := range []string{"client", "server"} {
		client, server := wsPair(t)
		w, r := client, server
		if side == "server" {
			w, r = server, client
		}
		c, rc := newWSConn(context.Background(), w, nil, nil), newWSConn(context.Background(), r, nil, nil)
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			io.CopyBuffer(io.Discard, readerOnly{rc}, make([]byte, 64<<10))
		}()
		for _, size := range []int{1000, 64 << 10} {
			hdr, body := yamuxFrame(yamuxTypeData, size), make([]byte, size)
			allocs := testing.AllocsPerRun(500, func() {
				if _, err := c.Write(hdr); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Write(body); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Errorf("%s: %v allocations per %d-byte frame written and read", side, allocs, size)
			}
		}
		c.Close()
		<-drained
	}
}

// TestWSConnConcurrentWrites checks that each Write is atomic and ordered
// with respect to the writer's earlier writes when several goroutines write.
func TestWSConnConcurrentWrites(t *testing.T) {
	t.Parallel()
	client, server := wsPair(t)
	c := newWSConn(context.Background(), client, nil, nil)
	msgs := readMessages(server)

	const writers, records, size = 4, 500, 64
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			rec := make([]byte, size)
			for seq := range records {
				rec[0] = byte(w)
				binary.BigEndian.PutUint32(rec[1:], uint32(seq))
				if _, err := c.Write(rec); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	var stream bytes.Buffer
	for m := range msgs {
		if len(m)%size != 0 {
			t.Errorf("a %d-byte message splits a write", len(m))
		}
		stream.Write(m)
	}
	next := make([]uint32, writers)
	b := stream.Bytes()
	if len(b) != writers*records*size {
		t.Fatalf("peer got %d bytes, want %d", len(b), writers*records*size)
	}
	for ; len(b) >= size; b = b[size:] {
		w, seq := b[0], binary.BigEndian.Uint32(b[1:])
		if int(w) >= writers || seq != next[w] {
			t.Fatalf("record from writer %d has sequence %d, want %d", w, seq, next[w%writers])
		}
		next[w]++
	}
}

// TestWSConnWriteAfterFlushError checks that a failure of the flusher is
// reported by the next Write, and stays reported.
func TestWSConnWriteAfterFlushError(t *testing.T) {
	t.Parallel()
	client, _ := wsPair(t)
	c := newWSConn(context.Background(), client, nil, nil)
	client.CloseNow() // the network fails under the conn

	var err error
	deadline := time.Now().Add(5 * time.Second)
	for err == nil && time.Now().Before(deadline) {
		_, err = c.Write([]byte("frame"))
		time.Sleep(time.Millisecond)
	}
	if err == nil {
		t.Fatal("Write kept succeeding after the WebSocket was closed")
	}
	if errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "write") {
		t.Fatalf("Write = %v; want the network's error", err)
	}
	if _, err2 := c.Write([]byte("again")); err2 != err {
		t.Errorf("second Write = %v, want the same sticky error %v", err2, err)
	}
	closed := make(chan struct{})
	go func() {
		c.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(time.Second):
		t.Fatal("Close hung on a failed connection")
	}
}

// TestWSConnCloseTwice checks that Close may be called repeatedly and
// concurrently, returns the same result to every caller, and that Write
// then refuses.
func TestWSConnCloseTwice(t *testing.T) {
	t.Parallel()
	client, server := wsPair(t)
	c := newWSConn(context.Background(), client, nil, nil)
	msgs := readMessages(server) // answers the closing handshake
	if _, err := c.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}

	const callers = 4
	errs := make(chan error, callers)
	for range callers {
		go func() { errs <- c.Close() }()
	}
	for range callers {
		select {
		case err := <-errs:
			if err != nil {
				t.Errorf("Close = %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not return")
		}
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close after Close = %v", err)
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Error("Write after Close succeeded")
	}
	var got []byte
	for m := range msgs {
		got = append(got, m...)
	}
	if string(got) != "last words" {
		t.Errorf("peer got %q, want the queued %q", got, "last words")
	}
}

// TestWSConnCloseSilentPeer checks that Close gives up after
// closeDrainTimeout when the peer stops reading and the network no longer
// takes our bytes, and that a Write blocked on the full queue is released.
func TestWSConnCloseSilentPeer(t *testing.T) {
	t.Parallel()
	client, _ := wsPair(t) // the server end is never read
	c := newWSConn(context.Background(), client, nil, nil)

	var queued atomic.Int64
	writeErr := make(chan error, 1)
	go func() {
		chunk := make([]byte, 32<<10)
		for {
			if _, err := c.Write(chunk); err != nil {
				writeErr <- err
				return
			}
			queued.Add(int64(len(chunk)))
		}
	}()
	// Wait until the socket buffers are full and the writer is stuck.
	last, still := int64(-1), 0
	for still < 3 {
		time.Sleep(100 * time.Millisecond)
		if n := queued.Load(); n == last {
			still++
		} else {
			last, still = n, 0
		}
	}
	t.Logf("writer stuck after %d bytes", last)

	start := time.Now()
	c.Close()
	took := time.Since(start)
	t.Logf("Close took %v", took.Round(time.Millisecond))
	if took > closeDrainTimeout+time.Second {
		t.Errorf("Close took %v with a silent peer; it should give up after about %v", took, closeDrainTimeout)
	}
	select {
	case err := <-writeErr:
		if err == nil {
			t.Error("blocked Write returned nil after Close")
		}
	case <-time.After(time.Second):
		t.Fatal("a Write blocked on the full queue was not released by Close")
	}
}

// TestCoalesceWritesHalfClose checks CoalesceWrites on a TCP connection:
// bytes arrive in order, CloseWrite flushes and sends FIN while reads go on,
// and Close is idempotent.
func TestCoalesceWritesHalfClose(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type peerResult struct {
		got []byte
		err error
	}
	peerDone := make(chan peerResult, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			peerDone <- peerResult{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(testTimeout))
		got, err := io.ReadAll(c) // ends at the FIN sent by CloseWrite
		if err == nil {
			_, err = c.Write([]byte("bye"))
		}
		peerDone <- peerResult{got, err}
	}()

	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := CoalesceWrites(raw, 0)
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	if got := c.(*corkConn).max; got != DefaultMaxBatch {
		t.Errorf("CoalesceWrites(c, 0) holds up to %d bytes, want DefaultMaxBatch", got)
	}
	var want bytes.Buffer
	for i := range 200 {
		p := bytes.Repeat([]byte{byte('a' + i%26)}, 1+i%100)
		want.Write(p)
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	hc, ok := c.(interface{ CloseWrite() error })
	if !ok {
		t.Fatal("CoalesceWrites' conn has no CloseWrite")
	}
	if err := hc.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	if _, err := c.Write([]byte("late")); err == nil {
		t.Error("Write after CloseWrite succeeded")
	}
	back, err := io.ReadAll(c)
	if err != nil || string(back) != "bye" {
		t.Errorf("read after CloseWrite = %q, %v; want %q", back, err, "bye")
	}
	p := <-peerDone
	if p.err != nil {
		t.Fatalf("peer: %v", p.err)
	}
	if !bytes.Equal(p.got, want.Bytes()) {
		t.Errorf("peer got %d bytes that differ from the %d written", len(p.got), want.Len())
	}
	first := c.Close()
	if second := c.Close(); second != first {
		t.Errorf("second Close = %v, first = %v", second, first)
	}
}

// recordingConn records the Write calls that reach it.
type recordingConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
	fail   error
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return 0, c.fail
	}
	c.writes = append(c.writes, slices.Clone(p))
	return len(p), nil
}

func (c *recordingConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.writes)
}

// TestCorkConn checks the cork: writes pass straight through when not
// corked; between Cork and the matching Uncork they are held and leave in
// one write, in order; a span larger than max leaves early; a write error
// is sticky.
func TestCorkConn(t *testing.T) {
	t.Parallel()
	under := &recordingConn{}
	c := CoalesceWrites(under, 100).(*corkConn)
	write := func(s string) {
		t.Helper()
		if n, err := c.Write([]byte(s)); err != nil || n != len(s) {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	write("direct")
	if under.count() != 1 {
		t.Fatalf("an uncorked write made %d writes, want 1", under.count())
	}
	c.Cork()
	write("a")
	c.Cork() // nested: only the outer Uncork sends
	write("b")
	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
	write("c")
	if under.count() != 1 {
		t.Fatalf("corked writes reached the connection before the last Uncork (%d writes)", under.count())
	}
	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
	if under.count() != 2 || string(under.writes[1]) != "abc" {
		t.Fatalf("after Uncork the connection got %q, want one write of %q", under.writes, "abc")
	}
	if c.buf != nil {
		t.Error("an uncorked conn still holds a buffer")
	}

	c.Cork()
	write(strings.Repeat("x", 60))
	write(strings.Repeat("y", 60)) // 120 > max: the first 60 leave now
	write(strings.Repeat("z", 150))
	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
	var lens []int
	for _, w := range under.writes[2:] {
		lens = append(lens, len(w))
	}
	if !slices.Equal(lens, []int{60, 60, 150}) {
		t.Errorf("a span over max left in writes of %v, want [60 60 150]", lens)
	}

	under.mu.Lock()
	under.fail = errors.New("broken pipe")
	under.mu.Unlock()
	c.Cork()
	write("held") // held: the failure shows at Uncork
	if err := c.Uncork(); err == nil {
		t.Fatal("Uncork succeeded on a failed connection")
	}
	if _, err := c.Write([]byte("later")); err == nil {
		t.Error("Write after a failure succeeded")
	}
}

// TestCoalesceWritesDeadlineAfterWrite checks that bytes a Write has
// accepted are sent even if a write deadline in the past is set before they
// leave the queue. crypto/tls does exactly that in Close (close_notify,
// then SetWriteDeadline(time.Now())), so a TLS server on CoalescingListener
// that answers and closes at once must not lose its answer.
func TestCoalesceWritesDeadlineAfterWrite(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(testTimeout))
		b, _ := io.ReadAll(c)
		got <- b
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := CoalesceWrites(raw, 0)
	if _, err := c.Write([]byte("response")); err != nil {
		t.Fatal(err)
	}
	c.SetWriteDeadline(time.Now())
	c.Close()
	if b := <-got; string(b) != "response" {
		t.Fatalf("peer got %q, want %q", b, "response")
	}
}

// acceptedStream opens a stream on client and returns it with its end
// accepted on server, once the byte that makes it known there has been
// read.
func acceptedStream(tb testing.TB, client, server *Session) (local, remote *Stream) {
	tb.Helper()
	local, err := client.OpenStream()
	if err != nil {
		tb.Fatal(err)
	}
	// The peer learns of a stream from its first frame.
	if _, err := local.Write([]byte{0}); err != nil {
		tb.Fatal(err)
	}
	remote, err = server.AcceptStream()
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := io.ReadFull(remote, make([]byte, 1)); err != nil {
		tb.Fatal(err)
	}
	return local, remote
}

// readerOnly and writerOnly hide ReadFrom/WriteTo so io.CopyBuffer uses the
// buffer it is given.
type readerOnly struct{ io.Reader }
type writerOnly struct{ io.Writer }

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
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// countingListener counts the Write calls and bytes of every connection it
// accepts: below TLS, each is one write to the TCP socket.
type countingListener struct {
	net.Listener
	writes atomic.Int64
	bytes  atomic.Int64
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
	l *countingListener
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.l.writes.Add(1)
	c.l.bytes.Add(int64(len(p)))
	return c.Conn.Write(p)
}

// TestCoalescing measures how many TCP writes the server makes for a burst
// of small yamux frames. yamux writes each frame as two calls (header, then
// body); unbatched, every call would be a WebSocket message, a TLS record
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
			// Without coalescing there would be at least 2*frames writes.
			// Under the race detector the writers' many synchronisations
			// slow down far more than the flusher's one syscall, so bursts
			// hardly pile up; header and body must still leave together.
			limit := int64(frames / 2)
			if raceEnabled() {
				limit = frames
			}
			if writes >= limit {
				t.Errorf("%d TCP writes for %d frames (limit %d): writes are not being coalesced", writes, frames, limit)
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
	msgs := make(chan []byte, 1024)
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

// TestWSConnBatches checks what goes on the wire: the bytes in order,
// binary messages no larger than maxBatch, and a single write larger than
// maxBatch sent whole rather than refused or split.
func TestWSConnBatches(t *testing.T) {
	t.Parallel()
	client, server := wsPair(t)
	const maxBatch = 4096
	c := newWSConn(context.Background(), client, nil, maxBatch)
	msgs := readMessages(server)

	var want bytes.Buffer
	for i := range 500 {
		p := bytes.Repeat([]byte{byte(i)}, 1+i*7%1000)
		if i == 250 {
			p = bytes.Repeat([]byte{'B'}, 3*maxBatch)
		}
		want.Write(p)
		if n, err := c.Write(p); err != nil || n != len(p) {
			t.Fatalf("Write %d: %d, %v", i, n, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	var got bytes.Buffer
	count, big := 0, 0
	for m := range msgs {
		count++
		switch {
		case len(m) == 3*maxBatch:
			big++
		case len(m) > maxBatch:
			t.Errorf("a %d-byte message; the batch limit is %d", len(m), maxBatch)
		}
		got.Write(m)
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("the peer received %d bytes that differ from the %d written (Close must send what is queued)", got.Len(), want.Len())
	}
	if big != 1 {
		t.Errorf("the write above the batch limit went out in %d messages of its size, want 1", big)
	}
	t.Logf("500 writes, %d bytes, in %d messages", want.Len(), count)
}

// TestWSConnConcurrentWrites checks that each Write is atomic and ordered
// with respect to the writer's earlier writes when several goroutines write.
func TestWSConnConcurrentWrites(t *testing.T) {
	t.Parallel()
	client, server := wsPair(t)
	c := newWSConn(context.Background(), client, nil, 1024)
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
	c := newWSConn(context.Background(), client, nil, 1024)
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
	if errors.Is(err, errBatcherClosed) {
		t.Fatalf("Write = %v; want the flusher's network error, not errBatcherClosed", err)
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
	c := newWSConn(context.Background(), client, nil, 1024)
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
	c := newWSConn(context.Background(), client, nil, 64<<10)

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
	if got := c.(*batchConn).b.max; got != DefaultMaxBatch {
		t.Errorf("CoalesceWrites(c, 0) batches up to %d bytes, want DefaultMaxBatch", got)
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

// TestCoalesceWritesCloseSilentPeer checks that Close of a batching conn
// whose peer never reads returns after closeDrainTimeout, not never.
func TestCoalesceWritesCloseSilentPeer(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe() // synchronous: a write blocks until b reads
	defer b.Close()
	c := CoalesceWrites(a, 1024)
	if _, err := c.Write([]byte("never read")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.Close()
	took := time.Since(start)
	t.Logf("Close took %v", took.Round(time.Millisecond))
	if took > closeDrainTimeout+time.Second {
		t.Errorf("Close took %v with a silent peer; it should give up after about %v", took, closeDrainTimeout)
	}
	if _, err := b.Read(make([]byte, 1)); err == nil {
		t.Error("the peer can still read after Close gave up")
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

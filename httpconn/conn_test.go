package httpconn

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/nettest"
)

// listen serves s at a test server and hands out the connections accepted.
func listen(t *testing.T, s *Server) (*httptest.Server, chan net.Conn) {
	t.Helper()
	accepted := make(chan net.Conn, 16)
	hs := httptest.NewServer(handler(s, accepted))
	t.Cleanup(hs.Close)
	t.Cleanup(func() { s.Close() }) // first: it ends the held polls hs.Close waits for
	return hs, accepted
}

func handler(s *Server, accepted chan net.Conn) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := Opening(r); ok {
			if c, err := s.Accept(w, r); err == nil {
				accepted <- c
			}
			return
		}
		if Following(r) && s.Serve(w, r) {
			return
		}
		http.NotFound(w, r)
	})
}

func dial(t *testing.T, target string, mode Mode, hc *http.Client) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := Dial(ctx, target, mode, &DialOptions{HTTPClient: hc, Protocol: "test"})
	if err != nil {
		t.Fatalf("dial %s: %v", mode, err)
	}
	return c
}

var modes = []Mode{Stream, Poll}

func TestConn(t *testing.T) {
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) {
			nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
				s := NewServer(ServerConfig{Hold: time.Second})
				accepted := make(chan net.Conn, 1)
				hs := httptest.NewServer(handler(s, accepted))
				c1, _, err = Dial(context.Background(), hs.URL, mode, &DialOptions{HTTPClient: hs.Client()})
				if err != nil {
					s.Close()
					hs.Close()
					return nil, nil, nil, err
				}
				c2 = <-accepted
				stop = func() {
					c1.Close()
					c2.Close()
					s.Close()
					hs.Close()
				}
				return c1, c2, stop, nil
			})
		})
	}
}

// TestBulk sends 16 MiB each way at once over each transport, and checks
// both arrive whole.
func TestBulk(t *testing.T) {
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) {
			hs, accepted := listen(t, NewServer(ServerConfig{}))
			c := dial(t, hs.URL, mode, hs.Client())
			sc := <-accepted
			exchange(t, c, sc, 16<<20)
		})
	}
}

// exchange writes size random bytes each way between a and b at once and
// checks what arrives, then closes both and checks that each reads EOF.
func exchange(t *testing.T, a, b net.Conn, size int) {
	t.Helper()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	send := func(c net.Conn, seed uint64) [32]byte {
		data := make([]byte, size)
		r := rand.New(rand.NewPCG(seed, seed))
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		go func() {
			c.Write(data)
		}()
		return sha256.Sum256(data)
	}
	recv := func(c net.Conn, out chan<- result) {
		h := sha256.New()
		n, err := io.CopyN(h, c, int64(size))
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		out <- r
	}
	toB, toA := make(chan result, 1), make(chan result, 1)
	wantB := send(a, 1)
	wantA := send(b, 2)
	go recv(b, toB)
	go recv(a, toA)
	for _, c := range []struct {
		name string
		ch   chan result
		want [32]byte
	}{{"client to server", toB, wantB}, {"server to client", toA, wantA}} {
		select {
		case r := <-c.ch:
			if r.err != nil || r.sum != c.want {
				t.Fatalf("%s: %d bytes, err %v, hash match %v", c.name, r.n, r.err, r.sum == c.want)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("%s: not all arrived", c.name)
		}
	}
	a.Close()
	b.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := b.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after the peer's close, read %d bytes, err %v; want EOF (%v)", n, err, a)
	}
	b.Close()
}

// faultProxy passes requests to target, but drops some before they
// arrive, drops the answers of others, sends some twice (answering with
// one of the two) and delays some.
type faultProxy struct {
	target  *url.URL
	client  *http.Client
	mu      sync.Mutex
	n       int
	counts  map[string]int
	none    bool  // pass everything
	carried int64 // bytes of the answers' bodies
	brought int64 // bytes of the requests' bodies

}

// pick is the fault for the next request: each kind in turn among
// requests passed whole, so that every kind happens in a short test.
func (p *faultProxy) pick() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	schedule := []string{"", "drop request", "", "delay", "drop answer", "", "repeat", "delay", ""}
	if p.none {
		schedule = []string{""}
	}
	f := schedule[p.n%len(schedule)]
	p.n++
	p.counts[f]++
	return f
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	p.mu.Lock()
	p.brought += int64(len(body))
	p.mu.Unlock()
	fault := ""
	if Following(r) {
		fault = p.pick()
	}
	forward := func() (*http.Response, []byte, error) {
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, p.target.String()+r.URL.Path, bytes.NewReader(body))
		req.Header = r.Header.Clone()
		resp, err := p.client.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, b, err
	}
	switch fault {
	case "drop request":
		http.Error(w, "dropped", http.StatusBadGateway)
		return
	case "delay":
		time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond)
	case "repeat":
		go forward() // the copy that is not answered
		time.Sleep(time.Millisecond)
	}
	resp, b, err := forward()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if fault == "drop answer" {
		http.Error(w, "dropped", http.StatusGatewayTimeout)
		return
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	p.mu.Lock()
	p.carried += int64(len(b))
	p.mu.Unlock()
	w.WriteHeader(resp.StatusCode)
	w.Write(b)
}

// TestPollNoWaste: with nothing lost, polling carries each byte once,
// though its answers pass each other on the way.
func TestPollNoWaste(t *testing.T) {
	hs, accepted := listen(t, NewServer(ServerConfig{}))
	target, _ := url.Parse(hs.URL)
	fp := &faultProxy{target: target, client: hs.Client(), counts: map[string]int{}, none: true}
	ps := httptest.NewServer(fp)
	t.Cleanup(ps.Close)
	c := dial(t, ps.URL, Poll, ps.Client())
	sc := <-accepted
	const size = 16 << 20
	exchange(t, c, sc, size)
	fp.mu.Lock()
	defer fp.mu.Unlock()
	if fp.carried > size*21/20 || fp.brought > size*21/20 {
		t.Errorf("%d bytes sent down and %d up for %d each way: bytes were sent again though none was lost", fp.carried, fp.brought, size)
	}
}

// TestPollFaults runs a polling connection through a proxy that drops,
// repeats and delays whole requests and answers: every byte arrives once.
func TestPollFaults(t *testing.T) {
	hs, accepted := listen(t, NewServer(ServerConfig{Hold: 500 * time.Millisecond}))
	target, _ := url.Parse(hs.URL)
	fp := &faultProxy{target: target, client: hs.Client(), counts: map[string]int{}}
	ps := httptest.NewServer(fp)
	t.Cleanup(ps.Close)
	c := dial(t, ps.URL, Poll, ps.Client())
	sc := <-accepted
	exchange(t, c, sc, 8<<20)
	fp.mu.Lock()
	defer fp.mu.Unlock()
	for _, f := range []string{"drop request", "drop answer", "repeat", "delay"} {
		if fp.counts[f] == 0 {
			t.Errorf("the proxy never did %q: %v", f, fp.counts)
		}
	}
}

// TestPollExpiry checks that a polling connection whose client vanished
// ends after the expiry, and that the server forgets it.
func TestPollExpiry(t *testing.T) {
	s := NewServer(ServerConfig{Hold: 100 * time.Millisecond, Expiry: 300 * time.Millisecond})
	hs, accepted := listen(t, s)
	hc := &http.Client{Transport: &http.Transport{}}
	c := dial(t, hs.URL, Poll, hc)
	sc := <-accepted
	c.(*transport).cancel() // the client vanishes without a word
	if _, err := sc.Write(make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	sc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := sc.Read(make([]byte, 1)); !errors.Is(err, ErrExpired) {
		t.Fatalf("read on an abandoned connection: %v; want %v", err, ErrExpired)
	}
	if n := s.Len(); n != 0 {
		t.Fatalf("%d connections still held after the expiry", n)
	}
	sc.Close()
	c.Close()
}

// TestStreamBuffered checks that a proxy holding the response's body
// shows as a BufferedError, within the probe time.
func TestStreamBuffered(t *testing.T) {
	hs, _ := listen(t, NewServer(ServerConfig{}))
	target, _ := url.Parse(hs.URL)
	holding := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, target.String()+r.URL.Path, r.Body)
		req.Header = r.Header.Clone()
		resp, err := hs.Client().Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		// Held whole, as a buffering proxy does: a stream never ends.
		b, _ := io.ReadAll(resp.Body)
		w.WriteHeader(resp.StatusCode)
		w.Write(b)
	}))
	t.Cleanup(holding.Close)
	t.Cleanup(holding.CloseClientConnections)
	start := time.Now()
	_, _, err := Dial(context.Background(), holding.URL, Stream, &DialOptions{HTTPClient: holding.Client(), Probe: 300 * time.Millisecond})
	var be *BufferedError
	if !errors.As(err, &be) || be.Direction != "down" {
		t.Fatalf("stream through a buffering proxy: %v; want a BufferedError for the down stream", err)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Fatalf("the probe took %s", waited)
	}
}

func (t *transport) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return fmt.Sprintf("closed %v err %v sent %d outBase %d outEnd %d inEnd %d inflight %d sending %v finSent %v", t.closed, t.err, t.sent, t.outBase, t.outEnd(), t.inEnd, t.inflight, t.sending, t.finSent)
}

// TestWindowBounds: a writer whose peer does not read gets no further
// than the window each end holds, and waits there.
func TestWindowBounds(t *testing.T) {
	const window = 256 << 10
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) {
			hs, accepted := listen(t, NewServer(ServerConfig{Window: window, Hold: 200 * time.Millisecond}))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, _, err := Dial(ctx, hs.URL, mode, &DialOptions{HTTPClient: hs.Client(), Window: window})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			sc := <-accepted
			defer sc.Close()
			for _, w := range []struct {
				name string
				conn net.Conn
			}{{"server to client", sc}, {"client to server", c}} {
				// A stream also fills the TCP connections' buffers, which
				// the kernel bounds; polls hold nothing outside the ends.
				total, bound := 8*window, 2*window+MaxBody
				if mode == Stream {
					total, bound = 64<<20, 64<<20-1
				}
				w.conn.SetWriteDeadline(time.Now().Add(time.Second))
				n, err := w.conn.Write(make([]byte, total))
				if !errors.Is(err, os.ErrDeadlineExceeded) || n > bound {
					t.Errorf("%s: wrote %d bytes (window %d) before %v; want at most %d, then the deadline", w.name, n, window, err, bound)
				}
			}
		})
	}
}

// TestQueue checks the chunked queue against a plain slice, across
// chunk boundaries, in random pushes and drops.
func TestQueue(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var q queue
	var want []byte
	next := byte(0)
	for range 2000 {
		if r.IntN(2) == 0 {
			p := make([]byte, r.IntN(3*chunkSize))
			for i := range p {
				p[i] = next
				next++
			}
			q.push(p)
			want = append(want, p...)
		} else if len(want) > 0 {
			k := r.IntN(len(want) + 1)
			q.drop(k)
			want = want[k:]
		}
		if q.n != len(want) {
			t.Fatalf("queue holds %d bytes, want %d", q.n, len(want))
		}
		if len(want) > 0 {
			from := r.IntN(len(want))
			got := make([]byte, r.IntN(len(want)-from)+1)
			if n := q.copyAt(got, from); n != len(got) || !bytes.Equal(got, want[from:from+n]) {
				t.Fatalf("copyAt(%d) copied %d bytes, not the ones pushed", from, n)
			}
		}
	}
	q.drop(q.n)
	if len(q.chunks) != 0 {
		t.Fatalf("an empty queue holds %d chunks", len(q.chunks))
	}
}

// BenchmarkTransports moves bytes one way over each transport on
// loopback (b.SetBytes: MB/s).
func BenchmarkTransports(b *testing.B) {
	for _, mode := range modes {
		b.Run(string(mode), func(b *testing.B) {
			s := NewServer(ServerConfig{})
			accepted := make(chan net.Conn, 1)
			hs := httptest.NewServer(handler(s, accepted))
			defer hs.Close()
			defer s.Close()
			c, _, err := Dial(context.Background(), hs.URL, mode, &DialOptions{HTTPClient: hs.Client()})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			sc := <-accepted
			defer sc.Close()
			buf := make([]byte, 256<<10)
			done := make(chan int64)
			go func() {
				n, _ := io.CopyN(io.Discard, sc, int64(b.N)*int64(len(buf)))
				done <- n
			}()
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for range b.N {
				c.Write(buf)
			}
			<-done
		})
	}
}

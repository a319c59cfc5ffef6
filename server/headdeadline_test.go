package server_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/burrowtun/burrow/server"
)

// slowWriter splits its first Write, the ClientHello, into ten pieces
// sent every gap, as a peer trickling its handshake does.
type slowWriter struct {
	net.Conn
	gap  time.Duration
	done bool
}

func (s *slowWriter) Write(p []byte) (int, error) {
	if s.done {
		return s.Conn.Write(p)
	}
	s.done = true
	step := max(1, len(p)/10)
	for i := 0; i < len(p); i += step {
		if _, err := s.Conn.Write(p[i:min(i+step, len(p))]); err != nil {
			return i, err
		}
		time.Sleep(s.gap)
	}
	return len(p), nil
}

func headDeadlineServer(t *testing.T, d time.Duration) *httptest.Server {
	t.Helper()
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	server.HeadDeadline(ts.Config, d)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts
}

// TestHeadDeadlineCoversHandshake trickles the TLS handshake over most of
// the deadline and then the request headers: the server must close the
// connection once the deadline from accept has passed, not a whole
// header timeout after the handshake.
func TestHeadDeadlineCoversHandshake(t *testing.T) {
	const d = time.Second
	ts := headDeadlineServer(t, d)
	raw, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	start := time.Now()
	raw.SetDeadline(start.Add(10 * time.Second))

	// The ClientHello in ten pieces 60 ms apart spends most of d.
	tc := tls.Client(&slowWriter{Conn: raw, gap: 60 * time.Millisecond}, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	hs := time.Since(start)
	if hs < d/3 {
		t.Fatalf("the handshake took %v; the test needs it to spend a good part of %v", hs, d)
	}
	if hs >= d {
		t.Skipf("the handshake alone took %v, past the %v deadline; nothing left to measure", hs, d)
	}
	if _, err := io.WriteString(tc, "GET / HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() {
		_, err := tc.Read(make([]byte, 1))
		closed <- err
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case err := <-closed:
			took := time.Since(start)
			if err == nil {
				t.Fatal("the server answered an unfinished request")
			}
			// Without the deadline from accept the close comes a whole d
			// after the handshake: hs+d > d+d/3.
			if took > d+d/4 {
				t.Fatalf("connection closed %v after accept (handshake %v); want about %v", took, hs, d)
			}
			if took < d-d/10 {
				t.Fatalf("connection closed after %v, before the %v deadline", took, d)
			}
			return
		case <-tick.C:
			if time.Since(start) > 5*d {
				t.Fatalf("still open after %v", time.Since(start))
			}
			io.WriteString(tc, "X-Slow: 1\r\n") // an error shows in the read
		}
	}
}

// TestHeadDeadlineSparesServedConnections checks that a connection whose
// first request arrived in time is not cut at the deadline: a kept-alive
// second request after it is still answered.
func TestHeadDeadlineSparesServedConnections(t *testing.T) {
	const d = 300 * time.Millisecond
	ts := headDeadlineServer(t, d)
	c, err := tls.Dial("tcp", ts.Listener.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	get := func() error {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if string(body) != "ok" {
			return errors.New("unexpected body " + string(body))
		}
		return nil
	}
	if err := get(); err != nil {
		t.Fatalf("first request: %v", err)
	}
	time.Sleep(2 * d)
	if err := get(); err != nil {
		t.Fatalf("a request after the deadline on a connection that met it: %v", err)
	}
}

package integration

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/burrowtun/burrow/integration/harness"
)

// handshakeTrickler splits its first Write, the ClientHello, into ten
// pieces sent gap apart.
type handshakeTrickler struct {
	net.Conn
	gap  time.Duration
	done bool
}

func (h *handshakeTrickler) Write(p []byte) (int, error) {
	if h.done {
		return h.Conn.Write(p)
	}
	h.done = true
	step := max(1, len(p)/10)
	for i := 0; i < len(p); i += step {
		if _, err := h.Conn.Write(p[i:min(i+step, len(p))]); err != nil {
			return i, err
		}
		time.Sleep(h.gap)
	}
	return len(p), nil
}

// TestHeaderTimeoutFromAccept trickles a ClientHello over most of
// --header-timeout and then the request headers, one line at a time: the
// server must close the connection --header-timeout after accepting it,
// not that long again after the handshake.
func TestHeaderTimeoutFromAccept(t *testing.T) {
	const timeout = 3 * time.Second
	srv := burrow.StartTestServer(t, nil, "--header-timeout", timeout.String())
	raw, err := net.DialTimeout("tcp", srv.Addr, harness.IOTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	start := time.Now()
	raw.SetDeadline(start.Add(4 * timeout))
	tc := tls.Client(&handshakeTrickler{Conn: raw, gap: 200 * time.Millisecond}, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	hs := time.Since(start)
	if hs < timeout/2 || hs >= timeout {
		t.Skipf("the handshake took %v; the test needs between %v and %v", hs, timeout/2, timeout)
	}
	if _, err := io.WriteString(tc, "GET / HTTP/1.1\r\nHost: localhost\r\n"); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() {
		_, err := tc.Read(make([]byte, 1))
		closed <- err
	}()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-closed:
			took := time.Since(start)
			if err == nil {
				t.Fatal("the server answered a request that never ended")
			}
			// Timed from the handshake's end instead, the close would come
			// after hs+timeout, at least 1.5 timeout.
			if took > timeout+timeout/4 {
				t.Fatalf("connection closed %v after it was opened (handshake %v); --header-timeout %v must cover both", took.Round(time.Millisecond), hs.Round(time.Millisecond), timeout)
			}
			t.Logf("closed %v after accept, the handshake took %v", took.Round(time.Millisecond), hs.Round(time.Millisecond))
			return
		case <-tick.C:
			if time.Since(start) > 3*timeout {
				t.Fatalf("still open after %v", time.Since(start).Round(time.Millisecond))
			}
			io.WriteString(tc, "X-Slow: 1\r\n") // an error shows in the read
		}
	}
}

package integration

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/burrowtun/burrow/integration/harness"
)

// TestForwardManyConcurrent pushes many large, concurrent, half-closed
// connections through one forward and checks every byte that comes back.
// It is not parallel so that its throughput figure means something and so
// that the other tests' timeouts are not eaten by its load.
func TestForwardManyConcurrent(t *testing.T) {
	const (
		conns   = 100
		maxSize = 8 << 20
	)
	echo := harness.StartEcho(t)
	tun := burrow.StartTunnel(t, nil, nil, nil, "127.0.0.1:0:"+echo)
	local := tun.Locals[0]

	seed := uint64(time.Now().UnixNano())
	t.Logf("payload seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	type result struct {
		i         int
		size      int64
		sent, got [sha256.Size]byte
		gotBytes  int64
		err       error
	}
	results := make(chan result, conns)
	var total int64
	start := time.Now()
	for i := range conns {
		size := rng.Int64N(maxSize + 1)
		var key [32]byte
		for j := range key {
			key[j] = byte(rng.Uint32())
		}
		total += size
		go func() {
			r := result{i: i, size: size}
			r.gotBytes, r.sent, r.got, r.err = echoHashed(local, rand.NewChaCha8(key), size)
			results <- r
		}()
	}
	for range conns {
		r := <-results
		switch {
		case r.err != nil:
			t.Errorf("connection %d (%d bytes): %v", r.i, r.size, r.err)
		case r.gotBytes != r.size:
			t.Errorf("connection %d: sent %d bytes, got %d back", r.i, r.size, r.gotBytes)
		case r.sent != r.got:
			t.Errorf("connection %d (%d bytes): sha256 of echo %x, of payload %x", r.i, r.size, r.got, r.sent)
		}
	}
	elapsed := time.Since(start)
	t.Logf("%d connections, %.1f MiB each way in %v: %.1f MiB/s through the tunnel (both directions)",
		conns, float64(total)/(1<<20), elapsed.Round(time.Millisecond), 2*float64(total)/(1<<20)/elapsed.Seconds())

	// Every connection rode the one WebSocket session.
	tun.Server.WaitLogCount(t, regexp.MustCompile(`msg="stream opened"`), conns, harness.IOTimeout)
	if n := tun.Server.CountLog(harness.SessionOpenedLine); n != 1 {
		t.Errorf("server logged %d \"session opened\" lines, want 1: every connection should share one session", n)
	}
	if n := tun.Client.CountLog(harness.ConnectedLine); n != 1 {
		t.Errorf("client logged %d \"connected\" lines, want 1", n)
	}
}

// echoHashed dials local, writes size bytes from src while reading the echo
// concurrently, half-closes after the last byte, reads until EOF, and
// returns the sha256 of what it sent and of what it received. It never
// holds the payload in memory.
func echoHashed(local string, src io.Reader, size int64) (gotBytes int64, sent, got [sha256.Size]byte, err error) {
	c, err := net.DialTimeout("tcp", local, harness.IOTimeout)
	if err != nil {
		return 0, sent, got, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	sentHash := sha256.New()
	werr := make(chan error, 1)
	go func() {
		_, err := io.CopyN(c, io.TeeReader(src, sentHash), size)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	gotHash := sha256.New()
	gotBytes, rerr := io.Copy(gotHash, c)
	if rerr != nil {
		c.Close() // unblock the writer
	}
	if err := <-werr; err != nil {
		return gotBytes, sent, got, fmt.Errorf("write: %w", err)
	}
	if rerr != nil {
		return gotBytes, sent, got, fmt.Errorf("read: %w", rerr)
	}
	copy(sent[:], sentHash.Sum(nil))
	copy(got[:], gotHash.Sum(nil))
	return gotBytes, sent, got, nil
}

// TestHalfClose forwards to an HTTP/1.0-style target that reads the whole
// request, until the client shuts down its write side, before it answers:
// the half-close must travel through the tunnel while the other direction
// stays open for the response.
func TestHalfClose(t *testing.T) {
	t.Parallel()
	target := harness.StartTarget(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(time.Minute))
		req, err := io.ReadAll(io.LimitReader(c, 16<<20))
		if err != nil {
			return
		}
		sum := sha256.Sum256(req)
		body := fmt.Sprintf("read %d bytes, sha256 %x\n", len(req), sum)
		fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	})
	// The default tunnel, and one whose ends read busy connections in the
	// smallest pieces --copy-buffer allows.
	small := []string{"--copy-buffer", "16384"}
	tunnels := []struct {
		name string
		tun  *harness.Tunnel
	}{
		{"default", burrow.StartTunnel(t, nil, nil, nil, "127.0.0.1:0:"+target)},
		{"copy buffer 16 KiB", burrow.StartTunnel(t, nil, small, small, "127.0.0.1:0:"+target)},
	}

	bigBody := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	tests := []struct {
		name string
		req  []byte
	}{
		{"empty", nil},
		{"GET", []byte("GET / HTTP/1.0\r\nHost: target\r\n\r\n")},
		{"POST 1MiB", append([]byte("POST /upload HTTP/1.0\r\nContent-Length: "+strconv.Itoa(len(bigBody))+"\r\n\r\n"), bigBody...)},
	}
	for _, tn := range tunnels {
		for _, tt := range tests {
			t.Run(tn.name+"/"+tt.name, func(t *testing.T) {
				halfCloseExchange(t, tn.tun.Locals[0], tt.req)
			})
		}
	}
}

// halfCloseExchange sends req through the forward at local, half-closes
// and checks the target's answer: req's length and hash.
func halfCloseExchange(t *testing.T, local string, req []byte) {
	t.Helper()
	c := harness.DialLocal(t, local)
	defer c.Close()
	resp, err := harness.Exchange(c, req)
	if err != nil {
		t.Fatalf("request through the forward: %v", err)
	}
	sum := sha256.Sum256(req)
	body := fmt.Sprintf("read %d bytes, sha256 %x\n", len(req), sum)
	want := fmt.Sprintf("HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	if string(resp) != want {
		t.Fatalf("response %q, want %q", resp, want)
	}
}

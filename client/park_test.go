package client_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/burrowtun/burrow/client"
)

// forwardGoroutines counts the goroutines of this process that carry a
// forwarded connection: in the forward itself, or in a splice, waiting
// (wait) or copying (copy, a first burst runs in it alone).
func forwardGoroutines() int {
	var buf bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&buf, 2) // as runtime.Stack(all) prints them
	count := 0
	for _, g := range bytes.Split(buf.Bytes(), []byte("\n\n")) {
		if bytes.Contains(g, []byte("client.(*Client).forward(")) || bytes.Contains(g, []byte("relay.(*splice).wait(")) ||
			bytes.Contains(g, []byte("relay.(*splice).copy(")) {
			count++
		}
	}
	return count
}

// TestIdleForwardsPark: forwarded connections that have gone idle hold no
// goroutine in the client (their directions are parked), and wake when
// either side speaks again.
func TestIdleForwardsPark(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sockets park only on Linux; elsewhere an idle connection keeps one goroutine")
	}
	ts := newTunnelServerWith(t, nil)
	addr, _ := run(t, ts, client.Config{Username: "alice", Password: "secret"})
	const n = 20
	conns := make([]net.Conn, n)
	readers := make([]*bufio.Reader, n)
	echo := func(i int, msg string) {
		t.Helper()
		line := fmt.Sprintf("%s %d\n", msg, i)
		conns[i].SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(conns[i], line); err != nil {
			t.Fatal(err)
		}
		if got, err := readers[i].ReadString('\n'); err != nil || got != line {
			t.Fatalf("connection %d echoed %q, %v; want %q", i, got, err, line)
		}
	}
	for i := range conns {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i], readers[i] = c, bufio.NewReader(c)
		echo(i, "hello")
	}
	waitIdle := func() {
		t.Helper()
		got := -1
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			if got = forwardGoroutines(); got == 0 {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("%d idle forwarded connections hold %d goroutines, want none", n, got)
	}
	waitIdle()
	for i := range conns {
		echo(i, "again, after parking")
	}
	waitIdle()
}

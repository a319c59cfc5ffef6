//go:build unix

package client

import (
	"net"
	"testing"
	"time"
)

// TestReadNow checks that readNow returns what has arrived, and returns at
// once with nothing when nothing has, or at EOF.
func TestReadNow(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	peer, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	conn, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, 16)

	start := time.Now()
	if n, err := readNow(conn, buf); n != 0 || err != nil {
		t.Fatalf("readNow with nothing sent = %d, %v", n, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("readNow waited %v", d)
	}
	peer.Write([]byte("hello"))
	deadline := time.Now().Add(10 * time.Second)
	var got []byte
	for len(got) < len("hello") && time.Now().Before(deadline) {
		n, err := readNow(conn, buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "hello" {
		t.Fatalf("readNow read %q, want %q", got, "hello")
	}
	peer.(*net.TCPConn).CloseWrite()
	time.Sleep(50 * time.Millisecond)
	if n, err := readNow(conn, buf); n != 0 || err != nil {
		t.Fatalf("readNow at EOF = %d, %v", n, err)
	}
	// The EOF is left for the next read.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := conn.Read(buf); n != 0 || err == nil {
		t.Fatalf("Read after readNow at EOF = %d, %v; want EOF", n, err)
	}
}

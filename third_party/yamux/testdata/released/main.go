// Command released speaks yamux over its standard input and output with
// hashicorp/yamux v0.1.2 as released, for the vendored copy's interop test
// (../../interop_test.go). It is a module of its own, without Burrow's
// replace, so that it builds the release from the module cache or proxy.
//
// It echoes every stream the other end opens, pings it all along with
// yamux's own keepalive, and opens streams of its own that the other end
// must echo: once they have all come back intact it writes "verified" to
// stderr. It exits when the session ends: 0, or 1 after an error.
package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

const (
	ownStreams = 8
	ownBytes   = 600 << 10 // more than the 256 KiB window: credit must flow
)

type stdio struct{}

func (stdio) Read(p []byte) (int, error)  { return os.Stdin.Read(p) }
func (stdio) Write(p []byte) (int, error) { return os.Stdout.Write(p) }
func (stdio) Close() error {
	os.Stdin.Close()
	return os.Stdout.Close()
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "released:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) != 2 {
		return fmt.Errorf("usage: released client|server")
	}
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = os.Stderr
	cfg.KeepAliveInterval = 10 * time.Millisecond
	start := yamux.Server
	if os.Args[1] == "client" {
		start = yamux.Client
	}
	sess, err := start(stdio{}, cfg)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, ownStreams)
	for i := 0; i < ownStreams; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if err := echoed(sess, byte(i)); err != nil {
				errs <- fmt.Errorf("stream %d: %w", i, err)
			}
		}(i)
	}
	go func() {
		wg.Wait()
		close(errs)
	}()
	go func() {
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				io.Copy(st, st)
				st.Close()
			}()
		}
	}()
	failed := false
	for err := range errs {
		fmt.Fprintln(os.Stderr, "released:", err)
		failed = true
	}
	if !failed {
		fmt.Fprintln(os.Stderr, "verified")
	}
	<-sess.CloseChan()
	if failed {
		return fmt.Errorf("some streams failed")
	}
	return nil
}

// echoed opens a stream, writes ownBytes on it while reading them back,
// and checks that they came back intact.
func echoed(sess *yamux.Session, seed byte) error {
	st, err := sess.OpenStream()
	if err != nil {
		return err
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(time.Minute))
	out := make([]byte, ownBytes)
	for i := range out {
		out[i] = seed + byte(i*13+i/509)
	}
	werr := make(chan error, 1)
	go func() {
		for off := 0; off < len(out); {
			n := 1 + (off*7+int(seed))%(64<<10)
			if off+n > len(out) {
				n = len(out) - off
			}
			if _, err := st.Write(out[off : off+n]); err != nil {
				werr <- err
				return
			}
			off += n
		}
		werr <- nil
	}()
	in := make([]byte, len(out))
	if _, err := io.ReadFull(st, in); err != nil {
		return err
	}
	if err := <-werr; err != nil {
		return err
	}
	if !bytes.Equal(in, out) {
		return fmt.Errorf("the echo differs")
	}
	return nil
}

package harness

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// StartTarget runs handle for every connection accepted on a new listener
// on 127.0.0.1:0 and returns its address. When the test ends the listener
// and any connection still open are closed, and the handlers are waited for.
func StartTarget(tb testing.TB, handle func(*net.TCPConn)) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return ServeTarget(tb, ln, handle)
}

// ServeTarget is StartTarget on a listener the caller made (in another
// network namespace, say), which it owns from then on.
func ServeTarget(tb testing.TB, ln net.Listener, handle func(*net.TCPConn)) string {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// StartEcho starts a target that echoes everything it reads until EOF, then
// closes its write side.
func StartEcho(tb testing.TB) string {
	return StartTarget(tb, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		buf := make([]byte, 64<<10)
		if _, err := io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, buf); err != nil {
			return
		}
		c.CloseWrite()
	})
}

// EchoRoundTrip sends msg to an echo target through the forward at local,
// half-closes, and checks that exactly msg comes back before EOF.
func EchoRoundTrip(tb testing.TB, local string, msg []byte) {
	tb.Helper()
	if err := EchoRoundTripErr(local, msg); err != nil {
		tb.Fatal(err)
	}
}

// DialLocal connects to addr, a local port (a forward, the server), with
// ioTimeout as the connection's deadline. The caller closes it.
func DialLocal(tb testing.TB, addr string) *net.TCPConn {
	tb.Helper()
	c, err := net.DialTimeout("tcp", addr, IOTimeout)
	if err != nil {
		tb.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(IOTimeout))
	return c.(*net.TCPConn)
}

// DialRefused is DialLocal for a forward whose target is refused: the
// forward resets the connection, which may come before the dial has
// returned, and then DialRefused returns nil.
func DialRefused(tb testing.TB, addr string) *net.TCPConn {
	tb.Helper()
	c, err := net.DialTimeout("tcp", addr, IOTimeout)
	if errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	if err != nil {
		tb.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(IOTimeout))
	return c.(*net.TCPConn)
}

// EchoRoundTripErr is EchoRoundTrip for goroutines other than the test's.
func EchoRoundTripErr(local string, msg []byte) error {
	c, err := net.DialTimeout("tcp", local, IOTimeout)
	if err != nil {
		return fmt.Errorf("dial forward %s: %w", local, err)
	}
	defer c.Close()
	if err := EchoOver(c.(*net.TCPConn), msg); err != nil {
		return fmt.Errorf("through %s: %w", local, err)
	}
	return nil
}

// Exchange sends msg on c and half-closes it, while reading everything
// that comes back until EOF.
func Exchange(c *net.TCPConn, msg []byte) ([]byte, error) {
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		c.Close() // unblock the writer
		<-werr
		return got, fmt.Errorf("reading: %w (got %d bytes)", err, len(got))
	}
	if err := <-werr; err != nil {
		return got, fmt.Errorf("writing: %w", err)
	}
	return got, nil
}

// EchoOver sends msg on c to an echo target, half-closes, and checks that
// exactly msg comes back before EOF, all within ioTimeout.
func EchoOver(c *net.TCPConn, msg []byte) error {
	c.SetDeadline(time.Now().Add(IOTimeout))
	got, err := Exchange(c, msg)
	if err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo: got %d bytes %.40q, want %d bytes %.40q", len(got), got, len(msg), msg)
	}
	return nil
}

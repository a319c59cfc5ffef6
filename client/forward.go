package client

import (
	"context"
	"errors"
	"fmt"
	"github.com/burrowtun/burrow/socks"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/burrowtun/burrow/mux"
)

// forwardStdio carries stdin/stdout as one connection to the remote's
// target, over whichever session is live when it starts. Stdin flows
// without waiting for the server's reply (see forward). It returns when
// the far end has finished sending: the program that reads stdout (ssh,
// for a ProxyCommand) has then all it will get. It fails when the
// connection was cut first (the session ended, or the far end reset it),
// so that the user is told and burrow exits non-zero: the end of stdout
// alone could pass for the end of the data. The copy from stdin is not
// waited for, since a read from a terminal or pipe cannot be
// interrupted; the process exits after a stdio forward.
func (c *Client) forwardStdio(ctx context.Context, r Remote) error {
	log := c.log.With("local", "stdio", "remote", r.RemoteAddr())
	st, err := mux.OpenEarly(ctx, c.session, mux.Header{Kind: mux.KindTCP, Target: r.RemoteAddr()})
	if err != nil {
		log.Error("stdio forward refused", "err", err)
		return fmt.Errorf("stdio remote %s: %w", r, err)
	}
	stop := context.AfterFunc(ctx, func() { st.Close() })
	defer stop()
	var sent atomic.Int64
	go func() {
		n, _ := io.Copy(st, c.cfg.Stdin)
		sent.Store(n)
		st.CloseWrite() // the target sees EOF
	}()
	replyCtx, cancel := c.openContext(ctx)
	err = st.WaitReply(replyCtx)
	cancel()
	if err != nil {
		st.Close()
		log.Error("stdio forward refused", "err", err)
		return fmt.Errorf("stdio remote %s: %w", r, err)
	}
	received, err := io.Copy(c.cfg.Stdout, st)
	if err == nil && !st.RemoteClosed() {
		err = errSessionEnded
	}
	if err != nil {
		// The far end learns of the failure as one (see
		// mux.Stream.Reset).
		st.Reset()
		c.cfg.Stdout.Close()
		log.Warn("stdio forward cut", "bytes_out", sent.Load(), "bytes_in", received, "err", err)
		return fmt.Errorf("stdio remote %s: the connection was cut after %d bytes received: %w", r, received, err)
	}
	c.cfg.Stdout.Close()
	log.Info("stdio forward closed", "bytes_out", sent.Load(), "bytes_in", received)
	return nil
}

// errSessionEnded is why a stdio forward failed when its session ended
// before the far end had finished sending.
var errSessionEnded = errors.New("the session to the server ended before the target had finished sending")

func (c *Client) serveListener(ctx context.Context, l net.Listener, r Remote, wg *sync.WaitGroup) {
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				c.log.Error("listener failed", "local", l.Addr().String(), "err", err)
			}
			return
		}
		wg.Add(1)
		go c.forward(ctx, conn, r, wg.Done)
	}
}

// forward carries conn to the remote's target, and calls release once
// the connection has ended. A plain forward sends the connection's first
// bytes right behind the stream header, without waiting for the server
// to dial the target, so a new connection costs one round trip through
// the tunnel rather than two. A SOCKS forward waits for the server's
// answer, which it owes its client before any payload. Once the stream
// is answered, a splice carries the connection and this goroutine ends:
// an idle connection waits parked (see relay.Parking), on no goroutine.
func (c *Client) forward(ctx context.Context, conn net.Conn, r Remote, release func()) {
	log := c.log.With("local", conn.LocalAddr().String(), "remote", r.RemoteAddr(), "peer", conn.RemoteAddr().String())
	// Until the splice starts, closing conn is how ctx's end reaches us.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	if r.Socks {
		c.forwardSOCKS(ctx, conn, log, stop, release)
		return
	}
	fail := func() {
		stop()
		conn.Close()
		release()
	}
	openCtx, cancel := c.openContext(ctx)
	defer cancel()
	st, err := mux.OpenEarly(openCtx, c.session, mux.Header{Kind: mux.KindTCP, Target: r.RemoteAddr()})
	if err != nil {
		log.Warn("forward refused", "err", err)
		fail()
		return
	}
	// The bytes the connection has sent already (a client that speaks
	// first usually has, by now) go with the header, in one frame.
	early, err := sendReceived(conn, st)
	if err != nil {
		log.Warn("local connection failed", "err", err)
		st.Close()
		fail()
		return
	}
	// The copy from conn starts at once, the copy to conn after an
	// accepting reply. A refusal ends both and closes conn.
	replied := make(chan error, 1)
	start := time.Now()
	stop()
	c.parking.Splice(ctx, conn, st, func(sent, received int64) {
		defer release()
		sent += early
		if err := <-replied; err != nil {
			switch {
			case errors.Is(err, net.ErrClosed):
				log.Info("connection closed before the server replied")
			case errors.Is(err, mux.ErrEarlyDataSent):
				log.Warn("forward lost with the session", "err", err)
			default:
				log.Warn("forward refused", "err", err)
			}
			return
		}
		log.Info("stream closed", "stream", st.StreamID(), "bytes_out", sent, "bytes_in", received,
			"duration", time.Since(start).Round(time.Millisecond))
	})
	err = st.WaitReply(openCtx)
	if err == nil {
		log.Info("stream opened", "stream", st.StreamID())
	}
	replied <- err
}

// firstBytes holds what sendReceived reads: a typical first flight of a
// client, such as a TLS ClientHello or an HTTP request's headers.
var firstBytes = sync.Pool{New: func() any { b := make([]byte, 4<<10); return &b }}

// sendReceived writes to st what conn has received so far, without
// waiting for more, and returns how many bytes that was.
func sendReceived(conn net.Conn, st *mux.EarlyStream) (int64, error) {
	bp := firstBytes.Get().(*[]byte)
	defer firstBytes.Put(bp)
	n, err := readNow(conn, *bp)
	if err != nil || n == 0 {
		return 0, err
	}
	n, err = st.Write((*bp)[:n])
	return int64(n), err
}

// forwardSOCKS reads a SOCKS request from conn, asks the server for its
// target and answers the SOCKS client with the server's verdict; stop
// ends the watch that closes conn with ctx, release is called once the
// connection has ended.
func (c *Client) forwardSOCKS(ctx context.Context, conn net.Conn, log *slog.Logger, stop func() bool, release func()) {
	fail := func() {
		stop()
		conn.Close()
		release()
	}
	conn.SetDeadline(time.Now().Add(c.cfg.OpenTimeout))
	target, err := socks.Handshake(conn, c.cfg.SOCKSAuth)
	conn.SetDeadline(time.Time{})
	if err != nil {
		log.Warn("socks request failed", "err", err)
		fail()
		return
	}
	log = log.With("target", target)
	openCtx, cancel := c.openContext(ctx)
	defer cancel()
	st, err := c.open(openCtx, mux.Header{Kind: mux.KindTCP, Target: target})
	socks.Reply(conn, err)
	if err != nil {
		log.Warn("forward refused", "err", err)
		fail()
		return
	}
	start := time.Now()
	log.Info("stream opened", "stream", st.StreamID())
	stop()
	c.parking.Splice(ctx, conn, st, func(sent, received int64) {
		log.Info("stream closed", "stream", st.StreamID(), "bytes_out", sent, "bytes_in", received,
			"duration", time.Since(start).Round(time.Millisecond))
		release()
	})
}

// openContext bounds the wait for a session and for the server's reply.
func (c *Client) openContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, c.cfg.OpenTimeout, errors.New("timed out waiting for the server"))
}

package client

import (
	"context"
	"errors"
	"fmt"
	"github.com/burrowtun/burrow/relay"
	"io/fs"
	"net"
	"os"
	"sync"
	"time"

	"github.com/burrowtun/burrow/mux"
)

// listenControl binds the control socket at path: a Unix socket, usable
// only by this user, through which local commands (burrow send, fetch and
// ls with --control) open file-transfer streams on this client's session,
// so that transfers and forwards share one connection. A stale socket
// left by a client that died is replaced; a live one is not.
func listenControl(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("control socket %s: a file that is not a socket is in the way; remove it or pick another path", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another burrow client is using it; pick another path", path)
		}
		os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	// Connections are also checked for this user's uid where the system
	// tells it, which covers the moment before the chmod.
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return l, nil
}

// serveControl carries each control connection over a file-transfer
// stream of the live session (waiting up to OpenTimeout for one while
// reconnecting).
func (c *Client) serveControl(ctx context.Context, l net.Listener, wg *sync.WaitGroup) {
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				c.log.Error("control socket failed", "err", err)
			}
			return
		}
		if err := peerIsOwner(conn); err != nil {
			c.log.Warn("control connection refused", "err", err)
			conn.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Bounded as a forward's open is: a transfer started while
			// the session is down fails in time, saying why.
			openCtx, cancel := c.openContext(ctx)
			st, err := c.open(openCtx, mux.Header{Kind: mux.KindFile})
			cancel()
			// The local command learns the outcome as a stream opener
			// does, in a reply: the server's refusal, or why there is
			// no stream, reaches its user.
			if werr := mux.WriteReply(conn, err); err != nil || werr != nil {
				if err != nil {
					c.log.Warn("file stream for the control socket refused", "err", err)
				}
				conn.Close()
				if st != nil {
					st.Close()
				}
				return
			}
			relay.Pipe(conn, st)
		}()
	}
}

// controlReplyTimeout bounds DialControl's wait for the client's reply.
const controlReplyTimeout = 2 * time.Minute

// DialControl connects to the control socket of a running client at path
// (see Config.Control) and returns a file-transfer stream over that
// client's session, once the client has opened one: the server's refusal
// is returned as the *mux.RemoteError it sent.
func DialControl(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w; is 'burrow client --control %s' running?", path, err, path)
	}
	// The client replies within its open timeout (30 s unless set); a
	// client that never does is not one that speaks this socket's reply.
	conn.SetReadDeadline(time.Now().Add(controlReplyTimeout))
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	err = mux.ReadReply(conn)
	if !stop() {
		err = context.Cause(ctx) // the deadline may be set: conn is done for
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		err = fmt.Errorf("no reply from the client in %v; is it a burrow client of this version?", controlReplyTimeout)
	}
	conn.SetReadDeadline(time.Time{})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("file stream through the control socket %s: %w", path, err)
	}
	return conn, nil
}

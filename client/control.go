package client

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"sync"

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
// stream of the live session (waiting for one while reconnecting).
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
			st, err := c.open(ctx, mux.Header{Kind: mux.KindFile})
			if err != nil {
				c.log.Warn("file stream for the control socket refused", "err", err)
				conn.Close()
				return
			}
			mux.Pipe(conn, st)
		}()
	}
}

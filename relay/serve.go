package relay

import (
	"context"
	"errors"
	"fmt"
	"github.com/burrowtun/burrow/mux"
	"net"
	"syscall"
	"time"
)

// DialFunc opens a connection to a target; *net.Dialer's DialContext is
// one.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// DialTarget dials target on behalf of a stream, within timeout, and
// returns a mux.Coded error that says in one line why it failed.
func DialTarget(ctx context.Context, dial DialFunc, network, target string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := dial(ctx, network, target)
	if err != nil {
		return nil, dialError(target, err)
	}
	return conn, nil
}

// dialError says in one line why target could not be reached.
func dialError(target string, err error) error {
	var dnsErr *net.DNSError
	var coded mux.Coded
	switch {
	case errors.As(err, &coded):
		// The dialer's own refusal (a forbidden address, say) says it best.
		return coded
	case errors.Is(err, syscall.ECONNREFUSED):
		return mux.Refuse(mux.CodeRefused, "connection refused by %s", target)
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return mux.Refuse(mux.CodeUnreachable, "cannot resolve %s: no such host", target)
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return mux.Refuse(mux.CodeTimeout, "timed out connecting to %s", target)
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return mux.Refuse(mux.CodeUnreachable, "%s is unreachable", target)
	}
	return mux.Refuse(mux.CodeFailed, "cannot connect to %s: %v", target, err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// SpliceTCP answers a stream that asked for a TCP connection to target:
// it dials, replies, and returns once the stream is answered and opened
// (when not nil) has run; Splice, parking on p, carries the stream on
// until both sides are done or ctx ends, then calls closed (when not nil)
// with the bytes carried each way (stream to target, target to stream). When it returns an error, the one it
// replied with, closed is not called.
func (p *Parking) SpliceTCP(ctx context.Context, st net.Conn, dial DialFunc, target string, timeout time.Duration, opened func(), closed func(sent, received int64)) error {
	conn, err := DialTarget(ctx, dial, "tcp", target, timeout)
	if err != nil {
		mux.WriteReply(st, err)
		st.Close()
		return err
	}
	if err := mux.WriteReply(st, nil); err != nil {
		conn.Close()
		st.Close()
		return fmt.Errorf("replying to stream: %w", err)
	}
	if opened != nil {
		opened()
	}
	p.Splice(ctx, st, conn, closed)
	return nil
}

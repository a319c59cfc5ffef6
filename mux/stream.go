package mux

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// Open opens a stream on sess, sends h and waits up to timeout for the
// peer's reply. On success the stream is ready for payload; on failure it
// is closed and the error is a *RemoteError when the peer refused.
func Open(sess *yamux.Session, h Header, timeout time.Duration) (*yamux.Stream, error) {
	st, err := sess.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("opening stream: %w", err)
	}
	if err := WriteHeader(st, h); err != nil {
		st.Close()
		return nil, fmt.Errorf("sending stream header: %w", err)
	}
	st.SetReadDeadline(time.Now().Add(timeout))
	if err := ReadReply(st); err != nil {
		st.Close()
		return nil, err
	}
	st.SetReadDeadline(time.Time{})
	return st, nil
}

// ReadHeaderTimeout reads a stream's header, failing if it does not arrive
// within timeout so that a peer cannot hold streams open for free.
func ReadHeaderTimeout(st *yamux.Stream, timeout time.Duration) (Header, error) {
	st.SetReadDeadline(time.Now().Add(timeout))
	h, err := ReadHeader(st)
	st.SetReadDeadline(time.Time{})
	return h, err
}

// copyBufSize is the buffer of one direction of a Pipe: large enough that a
// bulk transfer moves in few yamux frames, small enough to pool.
const copyBufSize = 64 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// halfCloser is a connection whose write side can be closed on its own:
// *net.TCPConn, *net.UnixConn, and *yamux.Stream through streamHalf.
type halfCloser interface {
	CloseWrite() error
}

// Pipe copies between a and b in both directions until both have reached
// EOF or either fails, then closes both. An EOF in one direction is passed
// on as a half-close (FIN), so protocols that signal the end of a request
// by shutting down their write side keep working. It returns the bytes
// copied each way.
func Pipe(a, b io.ReadWriteCloser) (aToB, bToA int64) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		aToB = copyHalf(b, a)
	}()
	bToA = copyHalf(a, b)
	wg.Wait()
	a.Close()
	b.Close()
	return aToB, bToA
}

// idleBufSize is what a Pipe direction holds while its source is idle,
// and burstIdle how long it keeps the large pooled buffer after the last
// read. An idle forwarded connection (an SSH session between keystrokes,
// a pooled database connection) then costs two small buffers, not two
// large ones, and a burst still moves in large reads.
const (
	idleBufSize = 1 << 10
	burstIdle   = 200 * time.Millisecond
)

// deadliner is a source whose reads can time out.
type deadliner interface {
	SetReadDeadline(time.Time) error
}

// copyHalf copies src to dst, then half-closes dst. On an error other
// than EOF it closes both ends so the other direction does not wait
// forever.
func copyHalf(dst, src io.ReadWriteCloser) int64 {
	var n int64
	var err error
	if d, ok := src.(deadliner); ok {
		n, err = copyAdaptive(dst, src, d)
	} else {
		bp := copyBufs.Get().(*[]byte)
		n, err = io.CopyBuffer(writerOnly{dst}, readerOnly{src}, *bp)
		copyBufs.Put(bp)
	}
	if err != nil {
		dst.Close()
		src.Close()
		return n
	}
	closeWrite(dst)
	return n
}

// copyAdaptive waits for data with a small buffer, then takes a large
// pooled one for as long as data keeps coming, giving it back after
// burstIdle without a byte. It returns nil at EOF.
func copyAdaptive(dst io.Writer, src io.Reader, d deadliner) (int64, error) {
	var total int64
	small := make([]byte, idleBufSize)
	for {
		n, err := src.Read(small)
		if n > 0 {
			if _, werr := dst.Write(small[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if err != nil {
			if err == io.EOF {
				return total, nil
			}
			return total, err
		}
		bp := copyBufs.Get().(*[]byte)
		m, err := burst(dst, src, d, *bp)
		copyBufs.Put(bp)
		total += m
		if err != nil {
			if err == io.EOF {
				return total, nil
			}
			return total, err
		}
	}
}

// burst copies with buf until the source has been quiet for burstIdle
// (nil error) or ends (io.EOF) or fails.
func burst(dst io.Writer, src io.Reader, d deadliner, buf []byte) (int64, error) {
	var total int64
	defer d.SetReadDeadline(time.Time{})
	for {
		d.SetReadDeadline(time.Now().Add(burstIdle))
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return total, nil
			}
			return total, err
		}
	}
}

func closeWrite(c io.Closer) {
	switch c := c.(type) {
	case halfCloser:
		c.CloseWrite()
	case *yamux.Stream:
		// A yamux stream's Close is a half-close: it sends FIN and
		// keeps reading until the peer closes too.
		c.Close()
	default:
		c.Close()
	}
}

// readerOnly and writerOnly hide ReadFrom/WriteTo so io.CopyBuffer uses the
// pooled buffer rather than allocating its own.
type readerOnly struct{ io.Reader }
type writerOnly struct{ io.Writer }

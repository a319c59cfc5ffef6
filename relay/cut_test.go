package relay

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/burrowtun/burrow/mux"
	"github.com/hashicorp/yamux"
)

// cutEnds is a splice between an application's TCP connection and a
// stream, as a forward has: app is the application's end, peer the far
// end of the stream, spliced the stream's end the splice holds.
type cutEnds struct {
	app     *net.TCPConn
	conn    *net.TCPConn // the splice's end of app's connection
	peer    *mux.Stream
	spliced interface{ RemoteClosed() bool }
	cancel  context.CancelFunc // ends the splice's context
	done    chan spliced
}

// startCut splices a new stream, as its opener (a plain stream or an
// EarlyStream, as forwards use) or as its acceptor, to a new TCP
// connection, on a Parking, with a context of its own.
func startCut(t *testing.T, kind string) *cutEnds {
	t.Helper()
	client, server := yamuxPair(t)
	var st io.ReadWriteCloser
	var c cutEnds
	switch kind {
	case "opener", "acceptor":
		local, remote := acceptedStream(t, client, server)
		st, c.peer = local, remote
		if kind == "acceptor" {
			st, c.peer = remote, local
		}
		c.spliced = st.(*mux.Stream)
	case "early":
		e, err := mux.OpenEarly(t.Context(), only(client), mux.Header{Kind: mux.KindTCP, Target: "example.com:80"})
		if err != nil {
			t.Fatal(err)
		}
		replied := make(chan error, 1)
		go func() { replied <- e.WaitReply(t.Context()) }() // sends the header
		peer, err := server.AcceptStream()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mux.ReadHeaderTimeout(peer, testTimeout); err != nil {
			t.Fatal(err)
		}
		if err := mux.WriteReply(peer, nil); err != nil {
			t.Fatal(err)
		}
		if err := <-replied; err != nil {
			t.Fatal(err)
		}
		st, c.peer, c.spliced = e, peer, e
	}
	conn, app := tcpPair(t)
	c.conn, c.app = conn, app
	c.app.SetDeadline(time.Now().Add(testTimeout))
	c.peer.SetDeadline(time.Now().Add(testTimeout))
	p := NewParking(0)
	t.Cleanup(func() { p.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c.cancel = cancel
	c.done = make(chan spliced, 1)
	p.Splice(ctx, conn, st, func(aToB, bToA int64) { c.done <- spliced{aToB, bToA} })
	return &c
}

// under way sends a few bytes from the stream's peer to the application.
func (c *cutEnds) underWay(t *testing.T) {
	t.Helper()
	if _, err := c.peer.Write([]byte("some")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c.app, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
}

func (c *cutEnds) wait(t *testing.T) spliced {
	t.Helper()
	select {
	case got := <-c.done:
		return got
	case <-time.After(testTimeout):
		t.Fatal("the splice did not end")
		return spliced{}
	}
}

// TestSpliceCutResets checks that every abnormal end of a splice reaches
// both sides as a reset: the application reads ECONNRESET, the stream's
// peer yamux.ErrConnectionReset, never the clean end of data that a
// truncated download or upload would be taken for.
func TestSpliceCutResets(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"opener", "acceptor", "early"} {
		for _, tc := range []struct {
			name string
			cut  func(c *cutEnds)
			// the peer's view, or "" when the peer is gone with its session
			peerSees error
		}{
			{"session ends", func(c *cutEnds) { c.peer.Session().Close() }, nil},
			{"peer resets the stream", func(c *cutEnds) { c.peer.Reset() }, nil},
			{"context ends", func(c *cutEnds) { c.cancel() }, yamux.ErrConnectionReset},
		} {
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				c := startCut(t, kind)
				c.underWay(t)
				tc.cut(c)
				if n, err := io.Copy(io.Discard, c.app); !errors.Is(err, syscall.ECONNRESET) || n != 0 {
					t.Errorf("the application read %d bytes, %v; want a reset (ECONNRESET)", n, err)
				}
				if tc.peerSees != nil {
					if n, err := io.Copy(io.Discard, c.peer); !errors.Is(err, tc.peerSees) || n != 0 {
						t.Errorf("the stream's peer read %d bytes, %v; want %v", n, err, tc.peerSees)
					}
				}
				c.wait(t)
			})
		}
		t.Run(kind+"/application resets", func(t *testing.T) {
			t.Parallel()
			c := startCut(t, kind)
			c.underWay(t)
			c.app.SetLinger(0)
			c.app.Close()
			if n, err := io.Copy(io.Discard, c.peer); !errors.Is(err, yamux.ErrConnectionReset) || n != 0 {
				t.Errorf("the stream's peer read %d bytes, %v; want a reset (%v)", n, err, yamux.ErrConnectionReset)
			}
			c.wait(t)
		})
	}
}

// TestSpliceCleanEnd checks that a clean end stays one, with every byte:
// the peer's FIN reaches the application as a FIN after all the peer
// sent, even when the session ends before the application has read it
// (the peer had finished: nothing was cut); and the application's own
// FIN reaches the peer as EOF after all it sent.
func TestSpliceCleanEnd(t *testing.T) {
	t.Parallel()
	payload := bytes.Repeat([]byte("every byte "), 20<<10) // 220 KiB: within the stream's window
	for _, kind := range []string{"opener", "acceptor", "early"} {
		t.Run(kind+"/both FINs", func(t *testing.T) {
			t.Parallel()
			c := startCut(t, kind)
			go func() { c.peer.Write(payload); c.peer.Close() }()
			if got, err := io.ReadAll(c.app); err != nil || !bytes.Equal(got, payload) {
				t.Fatalf("the application read %d of %d bytes, then %v; want all and EOF", len(got), len(payload), err)
			}
			go func() { c.app.Write(payload); c.app.CloseWrite() }()
			if got, err := io.ReadAll(c.peer); err != nil || !bytes.Equal(got, payload) {
				t.Fatalf("the peer read %d of %d bytes, then %v; want all and EOF", len(got), len(payload), err)
			}
			c.wait(t)
		})
		t.Run(kind+"/FIN, then the session ends", func(t *testing.T) {
			t.Parallel()
			c := startCut(t, kind)
			// The splice cannot write it all before the application
			// reads: the rest waits in the stream.
			c.app.SetReadBuffer(16 << 10)
			c.conn.SetWriteBuffer(16 << 10)
			if _, err := c.peer.Write(payload); err != nil {
				t.Fatal(err)
			}
			c.peer.Close()
			for deadline := time.Now().Add(testTimeout); !c.spliced.RemoteClosed(); {
				if time.Now().After(deadline) {
					t.Fatal("the peer's FIN did not arrive")
				}
				time.Sleep(time.Millisecond)
			}
			c.peer.Session().Close()
			if got, err := io.ReadAll(c.app); err != nil || !bytes.Equal(got, payload) {
				t.Fatalf("the application read %d of %d bytes, then %v; want all and EOF", len(got), len(payload), err)
			}
			c.wait(t)
		})
	}
}

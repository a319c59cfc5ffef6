package relay

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/burrowtun/burrow/mux"
)

// only returns a SessionFunc that always gives sess.
func only(sess *mux.Session) mux.SessionFunc {
	return func(context.Context) (*mux.Session, error) { return sess, nil }
}

// firstLive returns a SessionFunc that gives the first of sessions that is
// not closed, as a client gives its live session.
func firstLive(sessions ...*mux.Session) mux.SessionFunc {
	return func(ctx context.Context) (*mux.Session, error) {
		for _, s := range sessions {
			if !s.IsClosed() {
				return s, nil
			}
		}
		return nil, errors.New("no live session")
	}
}

// readEarly reads a header and n payload bytes from st without replying:
// they can only be there if the opener sent them before the reply.
func readEarly(st *mux.Stream, n int) (mux.Header, []byte, error) {
	st.SetReadDeadline(time.Now().Add(testTimeout))
	defer st.SetReadDeadline(time.Time{})
	h, err := mux.ReadHeader(st)
	if err != nil {
		return h, nil, err
	}
	p := make([]byte, n)
	_, err = io.ReadFull(st, p)
	return h, p, err
}

func waitReply(t *testing.T, e *mux.EarlyStream) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	return e.WaitReply(ctx)
}

// TestEarlyPayloadServeTCP runs the acceptor as the server does, with
// ServeTCP: early payload waits in the stream while it dials, and reaches
// the target after the reply.
func TestEarlyPayloadServeTCP(t *testing.T) {
	t.Parallel()
	target := startTCPEcho(t)
	ts := startTunnelServer(t, serverOptions{tr: transport{}})
	client, server := ts.dial(t, nil)
	var dialer net.Dialer
	serveStreams(t, server, func(st *mux.Stream) {
		h, err := mux.ReadHeaderTimeout(st, testTimeout)
		if err != nil {
			return
		}
		ServeTCP(t.Context(), st, dialer.DialContext, h.Target, testTimeout, nil)
	})

	for _, size := range []int{1, 1400, mux.MaxEarlyData, 1 << 20} {
		payload := bytes.Repeat([]byte("burrow!"), size/7+1)[:size]
		e, err := mux.OpenEarly(t.Context(), only(client), mux.Header{Kind: mux.KindTCP, Target: target})
		if err != nil {
			t.Fatal(err)
		}
		writeErr := make(chan error, 1)
		go func() {
			_, err := e.Write(payload)
			if err == nil {
				err = e.CloseWrite()
			}
			writeErr <- err
		}()
		if err := waitReply(t, e); err != nil {
			t.Fatalf("%d bytes: WaitReply: %v", size, err)
		}
		e.SetReadDeadline(time.Now().Add(testTimeout))
		got, err := io.ReadAll(e)
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("%d bytes: echo of %d bytes, %v", size, len(got), err)
		}
		if err := <-writeErr; err != nil {
			t.Fatalf("%d bytes: write: %v", size, err)
		}
		e.Close()
	}
}

// TestEarlyRefused checks that a refusal reaches the opener as a
// *RemoteError, from WaitReply, Read and Write, that the early payload is
// dropped, and that the stream is gone from both ends once closed.
func TestEarlyRefused(t *testing.T) {
	t.Parallel()
	ts := startTunnelServer(t, serverOptions{tr: transport{}})
	client, server := ts.dial(t, nil)
	refused := closedPort(t)
	var dialer net.Dialer
	serveStreams(t, server, func(st *mux.Stream) {
		h, err := mux.ReadHeaderTimeout(st, testTimeout)
		if err != nil {
			return
		}
		ServeTCP(t.Context(), st, dialer.DialContext, h.Target, testTimeout, nil)
	})

	e, err := mux.OpenEarly(t.Context(), only(client), mux.Header{Kind: mux.KindTCP, Target: refused})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	err = waitReply(t, e)
	wantRefusal(t, err, mux.CodeRefused, "connection refused by "+refused)
	n, err := e.Read(make([]byte, 10))
	if n != 0 {
		t.Errorf("Read after a refusal returned %d bytes", n)
	}
	wantRefusal(t, err, mux.CodeRefused, "")
	_, err = e.Write([]byte("more"))
	wantRefusal(t, err, mux.CodeRefused, "")
	e.Close()
	deadline := time.Now().Add(testTimeout)
	for client.NumStreams()+server.NumStreams() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("streams left open: %d on the opener, %d on the acceptor", client.NumStreams(), server.NumStreams())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

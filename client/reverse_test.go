package client_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/burrowtun/burrow/client"
	"github.com/burrowtun/burrow/mux"
)

// TestReverseStreamsEndWithSession: when the session dies, the client's
// connections for reverse streams are closed, not only half-closed, so a
// target that keeps a half-closed connection open does not hold the
// reconnection back.
func TestReverseStreamsEndWithSession(t *testing.T) {
	// A target that reads to EOF and then keeps its connection open.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	hold := make(chan struct{})
	defer close(hold)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(io.Discard, c) // until the client half-closes or closes
		<-hold                 // silent, and open, until the test ends
	}()
	const bind = "127.0.0.1:2222"
	reverse, err := client.ParseRemote("R:" + bind + ":" + l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	opened := make(chan struct{}, 1)
	var ts *tunnelServer
	ts = newTunnelServerWith(t, func(st *mux.Stream, session int32) {
		h, err := mux.ReadHeader(st)
		if err != nil || h.Kind != mux.KindBind || session > 1 {
			mux.WriteReply(st, nil)
			<-st.Session().CloseChan()
			return
		}
		mux.WriteReply(st, nil)
		// The server opens a reverse stream, as a connection to the
		// bind address would make it.
		rs, err := mux.Open(st.Session(), mux.Header{Kind: mux.KindReverseTCP, Target: bind}, 5*time.Second)
		if err != nil {
			t.Errorf("reverse stream: %v", err)
			return
		}
		rs.Write([]byte("x"))
		opened <- struct{}{}
		<-st.Session().CloseChan()
	})
	run(t, ts, client.Config{Username: "alice", Password: "secret", MaxRetryInterval: 200 * time.Millisecond,
		Remotes: []client.Remote{reverse}})
	select {
	case <-opened:
	case <-time.After(10 * time.Second):
		t.Fatal("the reverse stream was never opened")
	}
	time.Sleep(100 * time.Millisecond) // the byte reaches the target
	ts.dropSessions()
	for deadline := time.Now().Add(10 * time.Second); ts.sessions.Load() < 2; {
		if time.Now().After(deadline) {
			t.Fatal("the client did not reconnect while the reverse target kept its connection open")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

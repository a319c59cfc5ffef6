package mux_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/burrowtun/burrow/mux"
)

// A server is an http.Handler that upgrades with Accept and serves the
// streams the client opens; a client Dials, opens a stream, names what it
// wants in a Header and reads the server's Reply before any payload.
func Example() {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Authenticate r here, before the upgrade. Accept itself answers
		// HTTP 400 to a client of another wire version.
		sess, err := mux.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer sess.Close()
		var wg sync.WaitGroup
		defer wg.Wait()
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				return // the client closed the session
			}
			wg.Go(func() { serveGreeter(st) })
		}
	})
	srv := httptest.NewTLSServer(handler)
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "wss" + strings.TrimPrefix(srv.URL, "https") + "/tunnel"
	sess, err := mux.Dial(ctx, url, &mux.DialOptions{
		HTTPClient: srv.Client(), // trusts the test server's certificate
		Header:     http.Header{"Authorization": {"Bearer example-token"}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sess.Close()

	for _, target := range []string{"greeter:7", "10.0.0.1:22"} {
		st, err := sess.OpenStream()
		if err != nil {
			log.Fatal(err)
		}
		if err := mux.WriteHeader(st, mux.Header{Kind: mux.KindTCP, Target: target}); err != nil {
			log.Fatal(err)
		}
		if err := mux.ReadReply(st); err != nil {
			var refused *mux.RemoteError
			if errors.As(err, &refused) {
				fmt.Println("refused:", refused.Message)
				st.Close()
				continue
			}
			log.Fatal(err)
		}
		st.Close() // half-close: we have nothing to send, but still read
		greeting, err := io.ReadAll(st)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(string(greeting))
	}
	// Output:
	// hello from greeter:7
	// refused: target 10.0.0.1:22 is not allowed
}

// serveGreeter is the accepting side of one stream: read the header,
// answer, then carry the payload (here a greeting; in Burrow's server, a
// TCP connection to the target).
func serveGreeter(st *mux.Stream) {
	defer st.Close()
	h, err := mux.ReadHeaderTimeout(st, 10*time.Second)
	if err != nil {
		return
	}
	if h.Kind != mux.KindTCP || h.Target != "greeter:7" {
		mux.WriteReply(st, fmt.Errorf("target %s is not allowed", h.Target))
		return
	}
	if err := mux.WriteReply(st, nil); err != nil {
		return
	}
	io.WriteString(st, "hello from "+h.Target)
}

// The bytes a client sends first on a stream that asks for a TCP
// connection.
func ExampleAppendHeader() {
	b, err := mux.AppendHeader(nil, mux.Header{Kind: mux.KindTCP, Target: "db:5432"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("% x\n", b)
	// Output:
	// 01 01 00 07 64 62 3a 35 34 33 32
}

// The bytes of the two kinds of reply.
func ExampleWriteReply() {
	var ok, refused bytes.Buffer
	mux.WriteReply(&ok, nil)
	mux.WriteReply(&refused, errors.New("no route"))
	fmt.Printf("% x\n% x\n", ok.Bytes(), refused.Bytes())
	// Output:
	// 00 00 00
	// 01 00 08 6e 6f 20 72 6f 75 74 65
}

// A refused upgrade is a *HandshakeError carrying the HTTP status, the
// first line of the body, and any Retry-After.
func ExampleHandshakeError() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		http.Error(w, "server rejected credentials for user alice; check --auth", http.StatusUnauthorized)
	}))
	defer srv.Close()

	_, err := mux.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"), &mux.DialOptions{HTTPClient: srv.Client()})
	var he *mux.HandshakeError
	if errors.As(err, &he) {
		fmt.Println(he.StatusCode, he.RetryAfter)
		fmt.Println(err)
	}
	// Output:
	// 401 30s
	// server refused the tunnel (HTTP 401): server rejected credentials for user alice; check --auth
}

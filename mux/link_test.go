package mux

import (
	"bytes"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/burrowtun/burrow/certs"
)

// startWebSocketServer serves AcceptWebSocket, handing each connection to
// serve, over TLS; it returns the client and the URL.
func startWebSocketServer(t *testing.T, serve func(net.Conn)) (*http.Client, string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := AcceptWebSocket(w, r)
		if err != nil {
			return
		}
		serve(conn)
	}))
	client := startHTTPTest(t, srv, transport{name: "wss", tls: true})
	return client, "wss" + srv.URL[len("https"):] + "/tunnel"
}

// TestWebSocketDeadline: a read past its deadline on an upgraded
// connection fails, rather than waiting on a peer that sends nothing.
func TestWebSocketDeadline(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release)
	client, url := startWebSocketServer(t, func(conn net.Conn) {
		<-release // says nothing
		conn.Close()
	})
	conn, _, err := DialWebSocket(t.Context(), url, &DialOptions{HTTPClient: client})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	done := make(chan error, 1)
	go func() {
		_, err := conn.Read(make([]byte, 1))
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Read past the deadline returned no error")
		}
	case <-time.After(testTimeout):
		t.Fatal("Read did not return at its deadline")
	}
}

// TestSessionInsideTLS: a session started with Client and Server on a
// connection that runs inside the WebSocket (a TLS connection, as package
// inner makes) carries streams as one on the WebSocket does.
func TestSessionInsideTLS(t *testing.T) {
	t.Parallel()
	certPEM, keyPEM, err := certs.GenerateSelfSigned([]string{"localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan *Session, 1)
	client, url := startWebSocketServer(t, func(conn net.Conn) {
		sess, err := Server(tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{pair}}), nil)
		if err != nil {
			conn.Close()
			return
		}
		served <- sess
		<-sess.CloseChan()
	})
	conn, _, err := DialWebSocket(t.Context(), url, &DialOptions{HTTPClient: client})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := Client(tls.Client(conn, &tls.Config{InsecureSkipVerify: true}), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	server := <-served
	defer server.Close()
	serveStreams(t, server, echo)
	for _, size := range []int{0, 1, 70 << 10, 1 << 20} {
		if err := echoOnce(sess, bytes.Repeat([]byte{byte(size)}, size)); err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
	}
}

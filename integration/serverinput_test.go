package integration

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/burrowtun/burrow/integration/harness"
	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"
)

// The cases of TestBadInput that concern the server.

// testLoginRateLimit checks that repeated failed logins from one source are answered 429.
func testLoginRateLimit(t *testing.T) {
	srv := burrow.StartTestServer(t, nil)
	hc := insecureHTTPClient()
	upgrade := func(pass string) *http.Response {
		req, err := http.NewRequest(http.MethodGet, "https://"+srv.Addr+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		req.Header.Set("Sec-WebSocket-Protocol", "burrow.v1")
		req.SetBasicAuth(harness.TestUser, pass)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	// The server allows 10 failures per source and minute.
	const allowed, bound = 10, 30
	var limited *http.Response
	for i := 0; i < bound && limited == nil; i++ {
		switch resp := upgrade("wrong password"); resp.StatusCode {
		case http.StatusUnauthorized:
		case http.StatusTooManyRequests:
			if i < allowed {
				t.Errorf("limited after %d failed logins, want %d allowed", i, allowed)
			}
			limited = resp
		default:
			t.Fatalf("failed login %d: HTTP %d, want 401 or 429", i+1, resp.StatusCode)
		}
	}
	if limited == nil {
		t.Fatalf("%d failed logins from one source were never answered 429", bound)
	}
	if ra := limited.Header.Get("Retry-After"); ra == "" {
		t.Errorf("429 without Retry-After")
	}
	srv.WaitLog(t, regexp.MustCompile(`msg="login refused: too many failures" source=127\.0\.0\.1`), harness.IOTimeout)
	// The right password is refused too while the source is limited:
	// the limit is what stops password guessing.
	if resp := upgrade(harness.TestPass); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("right password while limited: HTTP %d, want 429", resp.StatusCode)
	}
}

// testGarbage sends bytes that are not TLS, or not HTTP inside TLS, to the server port.
func testGarbage(t *testing.T) {
	srv := burrow.StartTestServer(t, nil)

	garbage := make([]byte, 64<<10)
	rand.Read(garbage)
	sendRaw(t, srv.Addr, garbage)
	resp := sendRaw(t, srv.Addr, []byte("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"))
	if !strings.HasPrefix(string(resp), "HTTP/1.0 400") {
		t.Errorf("plain HTTP to the TLS port answered %q, want HTTP 400", resp)
	}
	// A TLS connection that sends nothing and goes away.
	if c, err := net.DialTimeout("tcp", srv.Addr, harness.IOTimeout); err == nil {
		tls.Client(c, &tls.Config{InsecureSkipVerify: true}).Close()
	}
	// A malformed request inside TLS (its answer is checked in
	// "responses before a close").
	if tc, err := tls.DialWithDialer(&net.Dialer{Timeout: harness.IOTimeout}, "tcp", srv.Addr, &tls.Config{InsecureSkipVerify: true}); err == nil {
		tc.SetDeadline(time.Now().Add(harness.IOTimeout))
		io.WriteString(tc, "\x00\x01 BREW /pot HTCPCP/1.0\r\n\r\n")
		io.Copy(io.Discard, tc)
		tc.Close()
	} else {
		t.Errorf("TLS handshake after garbage: %v", err)
	}

	if srv.Exited() {
		t.Fatalf("server exited after garbage")
	}
	echo := harness.StartEcho(t)
	_, locals := burrow.StartClient(t, srv.URL, harness.TestUser+":"+harness.TestPass,
		[]string{"--fingerprint", srv.Cert.Fingerprint}, "127.0.0.1:0:"+echo)
	harness.EchoRoundTrip(t, locals[0], []byte("served after garbage"))
}

// testHostileTunnelClient logs in properly, then breaks the wire protocol inside the WebSocket.
func testHostileTunnelClient(t *testing.T) {
	srv := burrow.StartTestServer(t, nil)
	echo := harness.StartEcho(t)

	t.Run("garbage instead of yamux", func(t *testing.T) {
		nc := dialTunnel(t, srv.Addr)
		garbage := make([]byte, 4096)
		rand.Read(garbage)
		if _, err := nc.Write(garbage); err != nil {
			t.Fatal(err)
		}
		nc.SetReadDeadline(time.Now().Add(harness.IOTimeout))
		if n, err := io.Copy(io.Discard, nc); err != nil && isTimeout(err) {
			t.Fatalf("server kept a session of garbage open for %v (read %d bytes)", harness.IOTimeout, n)
		}
		srv.WaitLog(t, regexp.MustCompile(`msg="session closed"`), harness.IOTimeout)
	})

	t.Run("bad streams", func(t *testing.T) {
		cfg := yamux.DefaultConfig()
		cfg.LogOutput = io.Discard
		sess, err := yamux.Client(dialTunnel(t, srv.Addr), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer sess.Close()
		tests := []struct {
			name   string
			header []byte
			log    string // what the server logs
			reply  string // the refusal it sends, if any
		}{
			{"unknown header version", streamHeader(9, 1, echo), `msg="bad stream header"`, ""},
			{"target too long", streamHeader(1, 1, strings.Repeat("a", 2000)), `msg="bad stream header"`, ""},
			{"truncated header", []byte{1, 1, 0}, `msg="bad stream header"`, ""},
			{"unknown kind", streamHeader(1, 77, echo), `msg="stream refused".*not supported`, "not supported"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before := srv.CountLog(regexp.MustCompile(tt.log))
				st, err := sess.OpenStream()
				if err != nil {
					t.Fatal(err)
				}
				defer st.Close()
				st.SetDeadline(time.Now().Add(harness.IOTimeout))
				if _, err := st.Write(tt.header); err != nil {
					t.Fatal(err)
				}
				st.Close() // half-close: a truncated header ends here
				got, err := io.ReadAll(st)
				if err != nil && isTimeout(err) {
					t.Fatalf("server left the stream open (read %q)", got)
				}
				if tt.reply == "" {
					if len(got) != 0 {
						t.Errorf("server answered %q, want the stream closed without a word", got)
					}
				} else if len(got) < 3 || got[0] == 0 || int(got[1])<<8|int(got[2]) != len(got)-3 ||
					!strings.Contains(string(got[3:]), tt.reply) {
					t.Errorf("server answered %q, want an error reply mentioning %q", got, tt.reply)
				}
				srv.WaitLogCount(t, regexp.MustCompile(tt.log), before+1, harness.IOTimeout)
			})
		}

		// The session survived all that and still carries a good stream.
		st, err := sess.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		st.SetDeadline(time.Now().Add(harness.IOTimeout))
		const msg = "a good stream after bad ones"
		if _, err := st.Write(append(streamHeader(1, 1, echo), msg...)); err != nil {
			t.Fatal(err)
		}
		st.Close()
		got, err := io.ReadAll(st)
		if err != nil {
			t.Fatalf("reading the good stream: %v (got %q)", err, got)
		}
		if want := "\x00\x00\x00" + msg; string(got) != want {
			t.Fatalf("good stream got %q, want %q (ok reply, then the echo)", got, want)
		}
	})

	if n := srv.CountLog(harness.SessionOpenedLine); n != 2 {
		t.Errorf("server logged %d sessions, want 2", n)
	}
	_, locals := burrow.StartClient(t, srv.URL, harness.TestUser+":"+harness.TestPass,
		[]string{"--fingerprint", srv.Cert.Fingerprint}, "127.0.0.1:0:"+echo)
	harness.EchoRoundTrip(t, locals[0], []byte("served after a hostile client"))
}

// testForeignWebSocketClient logs in properly with a WebSocket client that does not offer burrow's wire
// version.
func testForeignWebSocketClient(t *testing.T) {
	srv := burrow.StartTestServer(t, nil)
	tests := []struct {
		name         string
		subprotocols []string
	}{
		{"no subprotocol", nil},
		{"old wire version", []string{"burrow.v0"}},
		{"future wire version", []string{"burrow.v2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header := http.Header{}
			req := http.Request{Header: header}
			req.SetBasicAuth(harness.TestUser, harness.TestPass)
			ctx, cancel := context.WithTimeout(context.Background(), harness.IOTimeout)
			defer cancel()
			ws, resp, err := websocket.Dial(ctx, srv.URL, &websocket.DialOptions{
				HTTPClient:   insecureHTTPClient(),
				HTTPHeader:   header,
				Subprotocols: tt.subprotocols,
			})
			if err == nil {
				ws.CloseNow()
				t.Fatalf("server accepted a WebSocket with subprotocols %q (negotiated %q)", tt.subprotocols, ws.Subprotocol())
			}
			if resp == nil {
				t.Fatalf("no HTTP response: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("HTTP %d, want 400 (body %q)", resp.StatusCode, body)
			}
			if !strings.Contains(string(body), "wire version") {
				t.Errorf("body %q does not mention the wire version", body)
			}
		})
	}
	if srv.CountLog(harness.SessionOpenedLine) != 0 {
		t.Errorf("server opened a session for a client that does not speak its wire version")
	}
}

// testResponsesBeforeClose sends requests after which the server answers and closes the connection.
func testResponsesBeforeClose(t *testing.T) {
	srv := burrow.StartTestServer(t, nil)
	// Each of these makes the server answer and then close the
	// connection; the answer must arrive first. The loss is a race,
	// so each is tried several times.
	tests := []struct {
		name, request, status string
	}{
		{"HTTP/1.0 GET", "GET / HTTP/1.0\r\n\r\n", "HTTP/1.0 404 "},
		{"Connection: close", "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", "HTTP/1.1 404 "},
		{"malformed request", "\x00\x01 BREW /pot HTCPCP/1.0\r\n\r\n", "HTTP/1.1 400 "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const tries = 10
			lost := 0
			for range tries {
				tc, err := tls.DialWithDialer(&net.Dialer{Timeout: harness.IOTimeout}, "tcp", srv.Addr, &tls.Config{InsecureSkipVerify: true})
				if err != nil {
					t.Fatal(err)
				}
				tc.SetDeadline(time.Now().Add(harness.IOTimeout))
				io.WriteString(tc, tt.request)
				resp, err := io.ReadAll(tc)
				tc.Close()
				if !strings.HasPrefix(string(resp), tt.status) {
					lost++
					t.Logf("answer %.60q (%v), want %q...", resp, err, tt.status)
				}
			}
			if lost > 0 {
				t.Errorf("%d of %d answers lost or wrong", lost, tries)
			}
		})
	}
}

// testPlainHTTPSGet checks that the server looks like any web server to a browser or a scanner.
func testPlainHTTPSGet(t *testing.T) {
	srv := burrow.StartTestServer(t, nil)
	for _, path := range []string{"/", "/index.html", "/.well-known/security.txt"} {
		resp, err := insecureHTTPClient().Get("https://" + srv.Addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: HTTP %d, want 404", path, resp.StatusCode)
		}
		if strings.Contains(strings.ToLower(string(body)), "burrow") {
			t.Errorf("GET %s: body %q names the software", path, body)
		}
		for name, values := range resp.Header {
			if strings.Contains(strings.ToLower(strings.Join(values, " ")), "burrow") {
				t.Errorf("GET %s: header %s: %q names the software", path, name, values)
			}
		}
	}
}

// insecureHTTPClient talks to the test server without verifying it: these
// tests are about what the server answers, not about trust.
func insecureHTTPClient() *http.Client {
	return &http.Client{
		Timeout:   harness.IOTimeout,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}
}

// sendRaw writes data to addr over plain TCP, half-closes, and returns
// whatever comes back before the server closes or a second of silence.
func sendRaw(t *testing.T, addr string, data []byte) []byte {
	t.Helper()
	c := harness.DialLocal(t, addr)
	defer c.Close()
	if _, err := c.Write(data); err != nil {
		t.Logf("writing %d bytes of garbage: %v", len(data), err)
	}
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := io.ReadAll(c)
	if err != nil && !isTimeout(err) && !errors.Is(err, net.ErrClosed) {
		t.Logf("reading the answer to %d bytes of garbage: %v", len(data), err)
	}
	return resp
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// dialTunnel logs in as harness.TestUser and upgrades to the tunnel's WebSocket,
// and returns it as a net.Conn, for tests that speak the wire protocol by
// hand. It is closed when the test ends.
func dialTunnel(t *testing.T, addr string) net.Conn {
	t.Helper()
	header := http.Header{}
	(&http.Request{Header: header}).SetBasicAuth(harness.TestUser, harness.TestPass)
	ctx, cancel := context.WithTimeout(context.Background(), harness.IOTimeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "wss://"+addr, &websocket.DialOptions{
		HTTPClient:   insecureHTTPClient(),
		HTTPHeader:   header,
		Subprotocols: []string{"burrow.v1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	nc := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
	t.Cleanup(func() { nc.Close() })
	return nc
}

// streamHeader encodes a stream header as docs/protocol.md describes it:
// version, kind, target length (big endian), target.
func streamHeader(version, kind byte, target string) []byte {
	return append([]byte{version, kind, byte(len(target) >> 8), byte(len(target))}, target...)
}

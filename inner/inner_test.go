package inner

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/burrowtun/burrow/certs"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// keyPair is a server certificate and the client config that pins it.
func keyPair(t *testing.T) (server *tls.Config, pinned *tls.Config) {
	t.Helper()
	certPEM, keyPEM, err := certs.GenerateSelfSigned([]string{"tunnel.example"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	fp, err := certs.FingerprintPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	client, err := certs.ClientConfig(certs.ClientOptions{Fingerprint: fp})
	if err != nil {
		t.Fatal(err)
	}
	return certs.ServerConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &pair, nil }), client
}

// tap records every byte written on a connection, as a party in the middle sees them.
type tap struct {
	net.Conn
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (c tap) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.buf.Write(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

type result struct {
	conn net.Conn
	user string
	err  error
}

// tcpPair is a connected pair over loopback TCP, whose buffers let a
// side that gave up write its alert (net.Pipe would block it).
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	return a, b
}

// run runs Client and Server over a connection whose bytes it records.
func run(t *testing.T, serverCfg, clientCfg *tls.Config, login Login, check func(context.Context, Login) Verdict) (client, server result, wire func() []byte) {
	t.Helper()
	a, b := tcpPair(t)
	var mu sync.Mutex
	var seen bytes.Buffer
	ca, sb := tap{a, &mu, &seen}, tap{b, &mu, &seen}
	t.Cleanup(func() { a.Close(); b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan result, 1)
	go func() {
		c, user, err := Server(ctx, sb, serverCfg, check)
		done <- result{c, user, err}
	}()
	c, err := Client(ctx, ca, clientCfg, login)
	if err != nil {
		a.Close() // the server may wait for a login that will not come
	}
	client = result{conn: c, err: err}
	server = <-done
	return client, server, func() []byte {
		mu.Lock()
		defer mu.Unlock()
		return bytes.Clone(seen.Bytes())
	}
}

func accept(user, password string) func(context.Context, Login) Verdict {
	return func(_ context.Context, l Login) Verdict {
		if l.User == user && l.Password == password {
			return Verdict{Status: StatusOK}
		}
		return Verdict{Status: StatusDenied, Message: "wrong user name or password"}
	}
}

// TestSessionEndToEnd: a login and session bytes cross the inner layer
// both ways, and the outer wire shows none of them in any encoding.
func TestSessionEndToEnd(t *testing.T) {
	serverCfg, clientCfg := keyPair(t)
	password := "correct horse battery staple"
	client, server, wire := run(t, serverCfg, clientCfg, Login{User: "alice", Password: password}, accept("alice", password))
	if client.err != nil || server.err != nil {
		t.Fatalf("client: %v; server: %v", client.err, server.err)
	}
	if server.user != "alice" {
		t.Fatalf("server logged in %q, want alice", server.user)
	}
	up, down := make([]byte, 32), make([]byte, 32)
	rand.Read(up)
	rand.Read(down)
	errc := make(chan error, 1)
	go func() {
		got := make([]byte, len(up))
		if _, err := io.ReadFull(server.conn, got); err != nil || !bytes.Equal(got, up) {
			errc <- errors.New("server read other bytes than the client wrote")
			return
		}
		_, err := server.conn.Write(down)
		errc <- err
	}()
	if _, err := client.conn.Write(up); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(down))
	if _, err := io.ReadFull(client.conn, got); err != nil || !bytes.Equal(got, down) {
		t.Fatalf("client read %x (%v), want %x", got, err, down)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	seen := wire()
	for name, secret := range map[string][]byte{"password": []byte(password), "upload": up, "download": down} {
		for enc, form := range map[string]string{
			"raw": string(secret), "hex": hex.EncodeToString(secret), "base64": base64.StdEncoding.EncodeToString(secret),
			"base64url": base64.RawURLEncoding.EncodeToString(secret),
		} {
			if bytes.Contains(seen, []byte(form)) {
				t.Errorf("the outer wire shows the %s (%s)", name, enc)
			}
		}
	}
	if bytes.Contains(seen, []byte("alice")) {
		t.Error("the outer wire shows the user name")
	}
	client.conn.Close()
	server.conn.Close()
}

// TestWrongKey: a server without the pinned key is refused before the
// client sends its login.
func TestWrongKey(t *testing.T) {
	_, clientCfg := keyPair(t)
	otherServer, _ := keyPair(t)
	called := false
	client, server, wire := run(t, otherServer, clientCfg, Login{User: "alice", Password: "secret-password"},
		func(context.Context, Login) Verdict { called = true; return Verdict{} })
	var mismatch *certs.FingerprintMismatchError
	if !errors.As(client.err, &mismatch) {
		t.Fatalf("client: %v, want a FingerprintMismatchError", client.err)
	}
	if server.err == nil || called {
		t.Fatalf("server: %v (check called: %v), want the handshake failed and no login", server.err, called)
	}
	if bytes.Contains(wire(), []byte("secret-password")) {
		t.Fatal("the password crossed the outer wire")
	}
}

// TestRefusedLogin: the verdict reaches the client whole.
func TestRefusedLogin(t *testing.T) {
	serverCfg, clientCfg := keyPair(t)
	want := Verdict{Status: StatusLimited, RetryAfter: 42 * time.Second, Message: "too many failed logins from 127.0.0.1"}
	client, server, _ := run(t, serverCfg, clientCfg, Login{User: "bob", Password: "guess"},
		func(_ context.Context, l Login) Verdict {
			if l.User != "bob" || l.Password != "guess" {
				return Verdict{Status: StatusDenied, Message: "got " + l.User}
			}
			return want
		})
	var refused *RefusedError
	if !errors.As(client.err, &refused) || refused.Verdict != want {
		t.Fatalf("client: %v, want the verdict %+v", client.err, want)
	}
	if !errors.As(server.err, &refused) || server.user != "bob" {
		t.Fatalf("server: %v (user %q), want a RefusedError for bob", server.err, server.user)
	}
	if !strings.Contains(client.err.Error(), "rate limited") {
		t.Errorf("refusal %q does not say why", client.err)
	}
}

// TestClientBounded: a server that never answers does not hold the client
// past its context.
func TestClientBounded(t *testing.T) {
	_, clientCfg := keyPair(t)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go io.Copy(io.Discard, b) // reads, never answers
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Client(ctx, a, clientCfg, Login{User: "alice", Password: "x"})
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("Client returned %v after %v, want an error at its deadline", err, time.Since(start))
	}
}

// eofAfter fails a test that reads past n bytes: what is refused must be
// refused before it is read.
type eofAfter struct {
	t *testing.T
	r *bytes.Reader
}

func (e eofAfter) Read(p []byte) (int, error) {
	if e.r.Len() == 0 {
		e.t.Error("read past the bytes that decide the refusal")
		return 0, io.EOF
	}
	return e.r.Read(p)
}

func TestReadLoginRefusesBeforeReading(t *testing.T) {
	tests := []struct {
		name string
		head []byte
	}{
		{"version", []byte{2, 5}},
		{"empty user", []byte{1, 0}},
		{"long user", []byte{1, MaxUser + 1}},
		{"long password", append(append([]byte{1, 1}, 'a'), 0x04, 0x01)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadLogin(eofAfter{t, bytes.NewReader(tt.head)})
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ReadLogin = %v, want ErrMalformed", err)
			}
		})
	}
	if _, err := ReadVerdict(eofAfter{t, bytes.NewReader([]byte{0, 0, 0, 0, 0, 0x04, 0x01})}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("ReadVerdict of an overlong message = %v, want ErrMalformed", err)
	}
	if _, err := ReadLogin(bytes.NewReader([]byte{1, 3, 'a'})); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("ReadLogin of a cut name = %v, want io.ErrUnexpectedEOF", err)
	}
	if err := WriteLogin(io.Discard, Login{User: strings.Repeat("u", MaxUser+1)}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("WriteLogin of a long name = %v, want ErrMalformed", err)
	}
}

func FuzzReadLogin(f *testing.F) {
	var b bytes.Buffer
	WriteLogin(&b, Login{User: "alice", Password: "pw"})
	f.Add(b.Bytes())
	f.Add([]byte{1, 64})
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := ReadLogin(bytes.NewReader(data))
		if err != nil {
			return
		}
		var again bytes.Buffer
		if err := WriteLogin(&again, l); err != nil {
			t.Fatalf("read %+v, which WriteLogin refuses: %v", l, err)
		}
		if !bytes.HasPrefix(data, again.Bytes()) {
			t.Fatalf("read %+v from %x, which writes as %x", l, data, again.Bytes())
		}
	})
}

func FuzzReadVerdict(f *testing.F) {
	var b bytes.Buffer
	WriteVerdict(&b, Verdict{Status: StatusBusy, RetryAfter: 3 * time.Second, Message: "busy"})
	f.Add(b.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := ReadVerdict(bytes.NewReader(data))
		if err != nil {
			return
		}
		var again bytes.Buffer
		if err := WriteVerdict(&again, v); err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, again.Bytes()) {
			t.Fatalf("read %+v from %x, which writes as %x", v, data, again.Bytes())
		}
	})
}

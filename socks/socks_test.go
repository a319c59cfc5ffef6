package socks

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/burrowtun/burrow/mux"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/proxy"
)

// SOCKS5 byte sequences as a client sends them, and replies as the
// listener sends them, built by hand so the tests fix the wire layout
// rather than trusting the code under test to agree with itself.

func socksGreet(methods ...byte) []byte {
	return append([]byte{socksVersion, byte(len(methods))}, methods...)
}

func socksUserPass(user, pass string) []byte {
	b := []byte{socksAuthVersion, byte(len(user))}
	b = append(b, user...)
	b = append(b, byte(len(pass)))
	return append(b, pass...)
}

// socksReq is a request: cmd, atyp, the address as sent (a length byte
// included for a name) and the port.
func socksReq(cmd, atyp byte, addr []byte, port uint16) []byte {
	b := []byte{socksVersion, cmd, 0, atyp}
	b = append(b, addr...)
	return binary.BigEndian.AppendUint16(b, port)
}

func socksConnectIP(target string) []byte {
	ap := netip.MustParseAddrPort(target)
	if ap.Addr().Is4() {
		a := ap.Addr().As4()
		return socksReq(socksCmdConnect, socksAtypIPv4, a[:], ap.Port())
	}
	a := ap.Addr().As16()
	return socksReq(socksCmdConnect, socksAtypIPv6, a[:], ap.Port())
}

func socksConnectName(name string, port uint16) []byte {
	return socksReq(socksCmdConnect, socksAtypDomain, append([]byte{byte(len(name))}, name...), port)
}

// socksRep is a reply with code rep and the bound address 0.0.0.0:0.
func socksRep(rep byte) []byte { return []byte{socksVersion, rep, 0, socksAtypIPv4, 0, 0, 0, 0, 0, 0} }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// countingWriter records each Write so tests can check that a reply
// leaves in a single call.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

// socksConn is what Handshake talks to in the byte-level tests: it
// reads a fixed client transcript and records what the listener writes.
type socksConn struct {
	r *bytes.Reader
	countingWriter
}

func (c *socksConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func TestSOCKSHandshakeBytes(t *testing.T) {
	t.Parallel()
	auth := &Auth{Username: "alice", Password: "s3cret"}
	pw := []byte{socksVersion, socksMethodPassword}
	none := []byte{socksVersion, socksMethodNone}
	refused := []byte{socksVersion, socksMethodRefused}
	authOK := []byte{socksAuthVersion, 0}
	authBad := []byte{socksAuthVersion, 1}
	maxName := strings.Repeat("a", 63) + "." + strings.Repeat("b", 191) // 255 bytes

	tests := []struct {
		name    string
		auth    *Auth
		in      []byte
		want    string // target; "" when the handshake must fail
		wantErr error  // checked with errors.Is when set
		out     []byte // exactly what the listener writes
	}{
		{name: "ipv4", in: cat(socksGreet(0), socksConnectIP("1.2.3.4:80")), want: "1.2.3.4:80", out: none},
		{name: "ipv6", in: cat(socksGreet(0), socksConnectIP("[2001:db8::1]:443")), want: "[2001:db8::1]:443", out: none},
		{name: "ipv4-mapped ipv6", in: cat(socksGreet(0), socksConnectIP("[::ffff:1.2.3.4]:80")), want: "[::ffff:1.2.3.4]:80", out: none},
		{name: "domain", in: cat(socksGreet(0), socksConnectName("example.com", 22)), want: "example.com:22", out: none},
		{name: "domain 255 bytes", in: cat(socksGreet(0), socksConnectName(maxName, 65535)), want: maxName + ":65535", out: none},
		{name: "utf-8 domain", in: cat(socksGreet(0), socksConnectName("bücher.example", 80)), want: "bücher.example:80", out: none},
		{name: "none among several methods", in: cat(socksGreet(1, 2, 0), socksConnectIP("1.2.3.4:80")), want: "1.2.3.4:80", out: none},
		{name: "reserved byte ignored", in: cat(socksGreet(0), []byte{5, 1, 0xaa, 1, 1, 2, 3, 4, 0, 80}), want: "1.2.3.4:80", out: none},
		{name: "bytes after the request stay unread", in: cat(socksGreet(0), socksConnectName("example.com", 22), []byte("GET /")), want: "example.com:22", out: none},

		// RFC 1929.
		{name: "password", auth: auth, in: cat(socksGreet(2), socksUserPass("alice", "s3cret"), socksConnectName("example.com", 22)),
			want: "example.com:22", out: cat(pw, authOK)},
		{name: "password among several methods", auth: auth, in: cat(socksGreet(0, 1, 2), socksUserPass("alice", "s3cret"), socksConnectIP("1.2.3.4:80")),
			want: "1.2.3.4:80", out: cat(pw, authOK)},
		{name: "wrong password", auth: auth, in: cat(socksGreet(2), socksUserPass("alice", "s3creT"), socksConnectIP("1.2.3.4:80")),
			wantErr: ErrAuth, out: cat(pw, authBad)},
		{name: "wrong username", auth: auth, in: cat(socksGreet(2), socksUserPass("bob", "s3cret"), socksConnectIP("1.2.3.4:80")),
			wantErr: ErrAuth, out: cat(pw, authBad)},
		{name: "password prefix", auth: auth, in: cat(socksGreet(2), socksUserPass("alice", "s3cre"), socksConnectIP("1.2.3.4:80")),
			wantErr: ErrAuth, out: cat(pw, authBad)},
		{name: "empty credentials", auth: auth, in: cat(socksGreet(2), socksUserPass("", ""), socksConnectIP("1.2.3.4:80")),
			wantErr: ErrAuth, out: cat(pw, authBad)},
		{name: "auth version 5", auth: auth, in: cat(socksGreet(2), []byte{5, 5}, []byte("alice"), []byte{6}, []byte("s3cret")),
			out: pw},

		// The required method is not offered.
		{name: "password required, none offered", auth: auth, in: cat(socksGreet(0), socksConnectIP("1.2.3.4:80")), out: refused},
		{name: "no methods at all", auth: auth, in: socksGreet(), out: refused},
		{name: "none required, password offered", in: cat(socksGreet(2), socksUserPass("alice", "s3cret")), out: refused},
		{name: "none required, gssapi offered", in: socksGreet(1), out: refused},

		{name: "socks4 greeting", in: []byte{4, 1, 0, 80, 1, 2, 3, 4, 0}, out: nil},
		{name: "request version 4", in: cat(socksGreet(0), []byte{4, 1, 0, 1, 1, 2, 3, 4, 0, 80}), out: none},

		// Only CONNECT: BIND and UDP ASSOCIATE get "command not supported".
		{name: "bind", in: cat(socksGreet(0), socksReq(2, socksAtypIPv4, []byte{1, 2, 3, 4}, 80)), out: cat(none, socksRep(7))},
		{name: "udp associate", in: cat(socksGreet(0), socksReq(3, socksAtypIPv4, []byte{0, 0, 0, 0}, 0)), out: cat(none, socksRep(7))},
		{name: "command 0", in: cat(socksGreet(0), socksReq(0, socksAtypIPv4, []byte{1, 2, 3, 4}, 80)), out: cat(none, socksRep(7))},
		{name: "udp associate after password", auth: auth, in: cat(socksGreet(2), socksUserPass("alice", "s3cret"), socksReq(3, socksAtypIPv4, []byte{0, 0, 0, 0}, 0)),
			out: cat(pw, authOK, socksRep(7))},

		// Unknown address types get "address type not supported".
		{name: "atyp 0", in: cat(socksGreet(0), socksReq(1, 0, []byte{1, 2, 3, 4}, 80)), out: cat(none, socksRep(8))},
		{name: "atyp 2", in: cat(socksGreet(0), socksReq(1, 2, []byte{1, 2, 3, 4}, 80)), out: cat(none, socksRep(8))},
		{name: "atyp 5", in: cat(socksGreet(0), socksReq(1, 5, []byte{1, 2, 3, 4}, 80)), out: cat(none, socksRep(8))},
		{name: "atyp 255", in: cat(socksGreet(0), socksReq(1, 255, nil, 80)), out: cat(none, socksRep(8))},

		// Names that would change how "host:port" reads are refused.
		{name: "empty name", in: cat(socksGreet(0), socksConnectName("", 80)), out: cat(none, socksRep(4))},
		{name: "name with colon", in: cat(socksGreet(0), socksConnectName("evil.com:25", 80)), out: cat(none, socksRep(4))},
		{name: "ipv6 literal as a name", in: cat(socksGreet(0), socksConnectName("::1", 80)), out: cat(none, socksRep(4))},
		{name: "bracketed name", in: cat(socksGreet(0), socksConnectName("[::1]", 80)), out: cat(none, socksRep(4))},
		{name: "name with slash", in: cat(socksGreet(0), socksConnectName("example.com/x", 80)), out: cat(none, socksRep(4))},
		{name: "name with nul", in: cat(socksGreet(0), socksConnectName("example.com\x00.evil", 80)), out: cat(none, socksRep(4))},
		{name: "name with newline", in: cat(socksGreet(0), socksConnectName("example.com\r\nX: y", 80)), out: cat(none, socksRep(4))},
		{name: "name with tab", in: cat(socksGreet(0), socksConnectName("a\tb", 80)), out: cat(none, socksRep(4))},
		{name: "name with space", in: cat(socksGreet(0), socksConnectName("a b", 80)), out: cat(none, socksRep(4))},
		{name: "name with del", in: cat(socksGreet(0), socksConnectName("a\x7fb", 80)), out: cat(none, socksRep(4))},

		// Port 0 names no service.
		{name: "ipv4 port 0", in: cat(socksGreet(0), socksReq(1, socksAtypIPv4, []byte{1, 2, 3, 4}, 0)), out: cat(none, socksRep(4))},
		{name: "ipv6 port 0", in: cat(socksGreet(0), socksReq(1, socksAtypIPv6, make([]byte, 16), 0)), out: cat(none, socksRep(4))},
		{name: "domain port 0", in: cat(socksGreet(0), socksConnectName("example.com", 0)), out: cat(none, socksRep(4))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := &socksConn{r: bytes.NewReader(tt.in)}
			got, err := Handshake(c, tt.auth)
			if tt.want != "" {
				if err != nil || got != tt.want {
					t.Fatalf("Handshake = %q, %v; want %q", got, err, tt.want)
				}
				if _, _, err := net.SplitHostPort(got); err != nil {
					t.Errorf("target %q does not split: %v", got, err)
				}
			} else {
				if err == nil {
					t.Fatalf("Handshake accepted % x as target %q", tt.in, got)
				}
				if got != "" {
					t.Errorf("Handshake failed (%v) but returned target %q", err, got)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Errorf("Handshake error = %v, want %v", err, tt.wantErr)
				}
				if tt.wantErr == nil && errors.Is(err, ErrAuth) {
					t.Errorf("Handshake error = %v, which is not about credentials", err)
				}
			}
			if !bytes.Equal(c.Bytes(), tt.out) {
				t.Errorf("listener wrote % x, want % x", c.Bytes(), tt.out)
			}
			// Each message leaves in one Write, so a reply is never
			// split across TCP segments needlessly.
			if want := socksMessages(tt.out); c.writes != want {
				t.Errorf("listener made %d writes for %d messages", c.writes, want)
			}
		})
	}
}

// socksMessages counts the listener messages in out: a method answer,
// then maybe an authentication status (2 bytes) and a reply (10 bytes).
func socksMessages(out []byte) int {
	if len(out) == 0 {
		return 0
	}
	n, rest := 1, len(out)-2
	if rest >= 10 {
		n, rest = n+1, rest-10
	}
	if rest == 2 {
		n++
	}
	return n
}

// TestSOCKSHandshakeStopsAtRequest checks that the handshake reads the
// request and nothing after it: the client's first payload bytes must
// stay in the connection for the splice.
func TestSOCKSHandshakeStopsAtRequest(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		auth *Auth
		in   []byte
	}{
		{"ipv4", nil, cat(socksGreet(0), socksConnectIP("1.2.3.4:80"))},
		{"ipv6", nil, cat(socksGreet(0), socksConnectIP("[2001:db8::1]:443"))},
		{"domain with password", &Auth{"u", "p"}, cat(socksGreet(2), socksUserPass("u", "p"), socksConnectName("example.com", 22))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := &strictReader{data: append(bytes.Clone(tt.in), "PAYLOAD"...), limit: len(tt.in)}
			var w countingWriter
			rw := struct {
				io.Reader
				io.Writer
			}{r, &w}
			if _, err := Handshake(rw, tt.auth); err != nil {
				t.Fatal(err)
			}
			if r.overread {
				t.Fatal("Handshake read past the end of the request")
			}
		})
	}
}

// TestSOCKSHandshakeTruncated cuts valid handshakes at every byte: each
// cut must fail with an error that says the input ended, never panic and
// never return a target.
func TestSOCKSHandshakeTruncated(t *testing.T) {
	t.Parallel()
	auth := &Auth{Username: "alice", Password: "s3cret"}
	for _, tt := range []struct {
		name string
		auth *Auth
		in   []byte
	}{
		{"ipv4", nil, cat(socksGreet(0), socksConnectIP("1.2.3.4:80"))},
		{"ipv6", nil, cat(socksGreet(0), socksConnectIP("[2001:db8::1]:443"))},
		{"domain", nil, cat(socksGreet(0, 2), socksConnectName("example.com", 22))},
		{"password", auth, cat(socksGreet(0, 2), socksUserPass("alice", "s3cret"), socksConnectName("example.com", 22))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got, err := Handshake(&socksConn{r: bytes.NewReader(tt.in)}, tt.auth); err != nil {
				t.Fatalf("the whole input fails: %q, %v", got, err)
			}
			for i := range len(tt.in) {
				got, err := Handshake(&socksConn{r: bytes.NewReader(tt.in[:i])}, tt.auth)
				if err == nil {
					t.Fatalf("cut at %d of %d: accepted, target %q", i, len(tt.in), got)
				}
				if got != "" {
					t.Errorf("cut at %d: failed (%v) but returned target %q", i, err, got)
				}
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Errorf("cut at %d: error %v does not wrap io.EOF or io.ErrUnexpectedEOF", i, err)
				}
			}
		})
	}
}

// pipeDialer is a proxy.Dialer whose "proxy" is the far end of a
// net.Pipe, handed to serve.
type pipeDialer struct {
	serve func(net.Conn)
	done  chan struct{}
}

func (d *pipeDialer) Dial(network, addr string) (net.Conn, error) {
	client, server := net.Pipe()
	go func() {
		defer close(d.done)
		defer server.Close()
		d.serve(server)
	}()
	return client, nil
}

type socksResult struct {
	target string
	err    error
}

// TestSOCKSHandshakeProxyClient runs the handshake against
// golang.org/x/net/proxy's SOCKS5 client, over net.Pipe.
func TestSOCKSHandshakeProxyClient(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		listener   *Auth
		client     *proxy.Auth
		target     string
		wantRefuse bool // the listener refuses the credentials
	}{
		{name: "ipv4", target: "1.2.3.4:80"},
		{name: "ipv6", target: "[2001:db8::1]:443"},
		{name: "domain", target: "example.com:22"},
		{name: "ipv4 with password", listener: &Auth{"alice", "s3cret"}, client: &proxy.Auth{User: "alice", Password: "s3cret"}, target: "1.2.3.4:80"},
		{name: "ipv6 with password", listener: &Auth{"alice", "s3cret"}, client: &proxy.Auth{User: "alice", Password: "s3cret"}, target: "[2001:db8::1]:443"},
		{name: "domain with password", listener: &Auth{"alice", "s3cret"}, client: &proxy.Auth{User: "alice", Password: "s3cret"}, target: "example.com:22"},
		// The client offers both methods; a listener without auth picks none.
		{name: "client offers password, listener needs none", client: &proxy.Auth{User: "alice", Password: "x"}, target: "example.com:22"},
		{name: "wrong password", listener: &Auth{"alice", "s3cret"}, client: &proxy.Auth{User: "alice", Password: "guess"}, target: "example.com:22", wantRefuse: true},
		{name: "wrong user", listener: &Auth{"alice", "s3cret"}, client: &proxy.Auth{User: "mallory", Password: "s3cret"}, target: "example.com:22", wantRefuse: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := make(chan socksResult, 1)
			pd := &pipeDialer{done: make(chan struct{}), serve: func(c net.Conn) {
				c.SetDeadline(time.Now().Add(testTimeout))
				target, err := Handshake(c, tt.listener)
				if err == nil {
					err = Reply(c, nil)
				}
				res <- socksResult{target, err}
			}}
			d, err := proxy.SOCKS5("tcp", "socks.test:1080", tt.client, pd)
			if err != nil {
				t.Fatal(err)
			}
			conn, err := d.Dial("tcp", tt.target)
			if conn != nil {
				conn.Close()
			}
			<-pd.done
			r := <-res
			if tt.wantRefuse {
				if err == nil || !strings.Contains(err.Error(), "username/password authentication failed") {
					t.Errorf("client Dial = %v, want the listener's refusal of its credentials", err)
				}
				if !errors.Is(r.err, ErrAuth) {
					t.Errorf("Handshake = %q, %v; want ErrAuth", r.target, r.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("client Dial %s: %v", tt.target, err)
			}
			if r.err != nil || r.target != tt.target {
				t.Fatalf("Handshake = %q, %v; want %q", r.target, r.err, tt.target)
			}
		})
	}
}

// TestSOCKSReplyProxyClient checks that a refusal reaches a real client as
// a failed dial naming the SOCKS reply.
func TestSOCKSReplyProxyClient(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		err  error
		want string // golang.org/x/net's text for the reply code
	}{
		{mux.Refuse(mux.CodeRefused, "connection refused by db:5432"), "connection refused"},
		{mux.Refuse(mux.CodeDenied, "not allowed"), "connection not allowed by ruleset"},
		{mux.Refuse(mux.CodeUnreachable, "no such host"), "host unreachable"},
		{mux.Refuse(mux.CodeTimeout, "timed out"), "TTL expired"},
		{errors.New("boom"), "general SOCKS server failure"},
	} {
		t.Run(tt.want, func(t *testing.T) {
			t.Parallel()
			pd := &pipeDialer{done: make(chan struct{}), serve: func(c net.Conn) {
				c.SetDeadline(time.Now().Add(testTimeout))
				if _, err := Handshake(c, nil); err == nil {
					Reply(c, tt.err)
				}
			}}
			d, err := proxy.SOCKS5("tcp", "socks.test:1080", nil, pd)
			if err != nil {
				t.Fatal(err)
			}
			conn, err := d.Dial("tcp", "db:5432")
			if conn != nil {
				conn.Close()
			}
			<-pd.done
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("client Dial = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestSOCKSReply(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		rep  byte
	}{
		{"nil", nil, 0},
		{"denied", mux.Refuse(mux.CodeDenied, "target 10.0.0.1:22 is not allowed"), 2},
		{"refused", mux.Refuse(mux.CodeRefused, "connection refused by db:5432"), 5},
		{"unreachable", mux.Refuse(mux.CodeUnreachable, "cannot resolve x.invalid:80: no such host"), 4},
		{"timeout", mux.Refuse(mux.CodeTimeout, "timed out connecting to db:5432"), 6},
		{"failed", mux.Refuse(mux.CodeFailed, "cannot connect"), 1},
		{"unsupported", mux.Refuse(mux.CodeUnsupported, "kind 9"), 1},
		{"in use", mux.Refuse(mux.CodeInUse, "address in use"), 1},
		{"unknown code", mux.Refuse(200, "newer peer"), 1},
		{"plain error", errors.New("boom"), 1},
		{"wrapped", fmt.Errorf("opening stream: %w", mux.Refuse(mux.CodeRefused, "refused")), 5},
		{"other Coded type", codedErr{mux.CodeTimeout}, 6},
		// A non-nil error is never reported as success.
		{"coded ok", codedErr{mux.CodeOK}, 1},
		{"remote error ok", &mux.RemoteError{Code: mux.CodeOK, Message: "odd"}, 1},
		{"context deadline", context.DeadlineExceeded, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var w countingWriter
			if err := Reply(&w, tt.err); err != nil {
				t.Fatal(err)
			}
			want := []byte{5, tt.rep, 0, 1, 0, 0, 0, 0, 0, 0}
			if w.writes != 1 || !bytes.Equal(w.Bytes(), want) {
				t.Fatalf("Reply(%v) made %d writes of % x, want 1 write of % x", tt.err, w.writes, w.Bytes(), want)
			}
		})
	}
}

// TestSOCKSReplyFromStreamReply checks the path a SOCKS listener takes: a
// refusal read from the far side's stream reply keeps its code.
func TestSOCKSReplyFromStreamReply(t *testing.T) {
	t.Parallel()
	for code, rep := range map[mux.Code]byte{
		mux.CodeFailed: 1, mux.CodeDenied: 2, mux.CodeRefused: 5, mux.CodeUnreachable: 4,
		mux.CodeTimeout: 6, mux.CodeUnsupported: 1, mux.CodeInUse: 1,
	} {
		var stream bytes.Buffer
		if err := mux.WriteReply(&stream, mux.Refuse(code, "refusal %d", code)); err != nil {
			t.Fatal(err)
		}
		var w bytes.Buffer
		if err := Reply(&w, mux.ReadReply(&stream)); err != nil {
			t.Fatal(err)
		}
		if got := w.Bytes(); !bytes.Equal(got, socksRep(rep)) {
			t.Errorf("code %d: SOCKS reply % x, want % x", code, got, socksRep(rep))
		}
	}
}

// failWriter fails every Write.
type failWriter struct{ io.Reader }

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

// TestSOCKSHandshakeWriteFails checks that a client gone before the
// method answer fails the handshake rather than reading on.
func TestSOCKSHandshakeWriteFails(t *testing.T) {
	t.Parallel()
	for _, auth := range []*Auth{nil, {"u", "p"}} {
		in := cat(socksGreet(0, 2), socksUserPass("u", "p"), socksConnectIP("1.2.3.4:80"))
		if auth == nil {
			in = cat(socksGreet(0), socksConnectIP("1.2.3.4:80"))
		}
		got, err := Handshake(failWriter{bytes.NewReader(in)}, auth)
		if err == nil || got != "" {
			t.Errorf("auth %v: Handshake = %q, %v; want the write error", auth, got, err)
		}
	}
	if err := Reply(failWriter{}, nil); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("Reply = %v, want the write error", err)
	}
}

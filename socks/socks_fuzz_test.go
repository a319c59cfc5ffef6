package socks

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

// FuzzSOCKSHandshake feeds arbitrary client bytes to Handshake, with
// and without required credentials. It must never panic; a target it
// returns must be a well-formed "host:port" with a port in 1-65535 and a
// host that is an IP address or a name without separators or control
// characters; and what the listener writes must be one of the answers the
// protocol allows at that point.
func FuzzSOCKSHandshake(f *testing.F) {
	seeds := [][]byte{
		cat(socksGreet(0), socksConnectIP("1.2.3.4:80")),
		cat(socksGreet(0), socksConnectIP("[2001:db8::1]:443")),
		cat(socksGreet(0), socksConnectIP("[::ffff:1.2.3.4]:80")),
		cat(socksGreet(0), socksConnectName("example.com", 22)),
		cat(socksGreet(0, 1, 2), socksConnectName(strings.Repeat("x", 255), 65535)),
		cat(socksGreet(2), socksUserPass("alice", "s3cret"), socksConnectName("example.com", 22)),
		cat(socksGreet(2), socksUserPass("alice", "wrong"), socksConnectIP("1.2.3.4:80")),
		cat(socksGreet(2), []byte{5, 5}, []byte("alice")),
		cat(socksGreet(0), socksReq(2, socksAtypIPv4, []byte{1, 2, 3, 4}, 80)),
		cat(socksGreet(0), socksReq(3, socksAtypIPv4, []byte{0, 0, 0, 0}, 0)),
		cat(socksGreet(0), socksReq(1, 9, []byte{1, 2, 3, 4}, 80)),
		cat(socksGreet(0), socksConnectName("", 80)),
		cat(socksGreet(0), socksConnectName("a:b", 80)),
		cat(socksGreet(0), socksConnectName("a/b", 80)),
		cat(socksGreet(0), socksConnectName("a\x00b", 80)),
		cat(socksGreet(0), socksConnectName("example.com", 0)),
		cat(socksGreet(0), socksReq(1, socksAtypIPv4, []byte{1, 2, 3, 4}, 0)),
		cat(socksGreet(0), []byte{4, 1, 0, 1, 1, 2, 3, 4, 0, 80}),
		socksGreet(),
		socksGreet(1),
		{4, 1, 0, 80, 1, 2, 3, 4, 0},
		{5, 0xff},
		{},
	}
	for _, s := range seeds {
		f.Add(s, false)
		f.Add(s, true)
		if len(s) > 1 {
			f.Add(s[:len(s)-1], false)
			f.Add(s[:len(s)-1], true)
		}
	}
	auth := &Auth{Username: "alice", Password: "s3cret"}

	f.Fuzz(func(t *testing.T, data []byte, withAuth bool) {
		var a *Auth
		if withAuth {
			a = auth
		}
		c := &socksConn{r: bytes.NewReader(data)}
		target, err := Handshake(c, a)
		out := c.Bytes()
		if err != nil {
			if target != "" {
				t.Fatalf("failed (%v) but returned target %q", err, target)
			}
			if errors.Is(err, ErrAuth) && !bytes.HasSuffix(out, []byte{socksAuthVersion, 1}) {
				t.Fatalf("wrong credentials answered with % x, want status 1", out)
			}
			checkSOCKSOutput(t, out, withAuth, false)
			return
		}
		checkSOCKSOutput(t, out, withAuth, true)
		host, port, err := net.SplitHostPort(target)
		if err != nil {
			t.Fatalf("target %q does not split: %v", target, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 || port != strconv.Itoa(p) {
			t.Fatalf("target %q has port %q, want 1-65535", target, port)
		}
		if host == "" {
			t.Fatalf("target %q has an empty host", target)
		}
		if _, err := netip.ParseAddr(host); err == nil {
			return
		}
		if strings.ContainsAny(host, ":/[]") || strings.ContainsFunc(host, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			t.Fatalf("target %q has a host that is neither an address nor a clean name", target)
		}
	})
}

// checkSOCKSOutput checks that out is a sequence of answers the listener
// may give: a method answer, an authentication status when credentials
// are required, and on failure at most one reply; on success nothing
// but the method answer and authentication success.
func checkSOCKSOutput(t *testing.T, out []byte, withAuth, ok bool) {
	t.Helper()
	method := byte(socksMethodNone)
	if withAuth {
		method = socksMethodPassword
	}
	if len(out) == 0 {
		if ok {
			t.Fatal("accepted without answering the greeting")
		}
		return
	}
	if len(out) < 2 || out[0] != socksVersion || (out[1] != method && out[1] != socksMethodRefused) {
		t.Fatalf("first answer % x is not a method answer for method %d", out, method)
	}
	if out[1] == socksMethodRefused {
		if ok || len(out) != 2 {
			t.Fatalf("refused the method but wrote % x and succeeded=%v", out, ok)
		}
		return
	}
	rest := out[2:]
	if withAuth && len(rest) > 0 {
		if len(rest) < 2 || rest[0] != socksAuthVersion || rest[1] > 1 {
			t.Fatalf("authentication status % x is malformed", rest)
		}
		if rest[1] == 1 && len(rest) != 2 {
			t.Fatalf("went on after refusing the credentials: % x", out)
		}
		rest = rest[2:]
	}
	if ok {
		if len(rest) != 0 {
			t.Fatalf("succeeded after writing a reply: % x", out)
		}
		return
	}
	if len(rest) == 0 {
		return
	}
	if len(rest) != 10 || !bytes.Equal(rest, socksRep(rest[1])) || (rest[1] != 4 && rest[1] != 7 && rest[1] != 8) {
		t.Fatalf("failure reply % x is not host unreachable, command or address type not supported", rest)
	}
}

// FuzzReadBindAuth feeds arbitrary bytes to ReadBindAuth: it must never
// panic, and credentials it returns must encode back to the bytes read.
func FuzzReadBindAuth(f *testing.F) {
	var b bytes.Buffer
	WriteBindAuth(&b, &Auth{Username: "alice", Password: "s3cret"})
	f.Add(b.Bytes())
	f.Add([]byte{0, 0})
	f.Add([]byte{0, 3, 'x', 'y', 'z'})
	f.Add([]byte{5, 'a'})
	f.Add([]byte{255})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ReadBindAuth(bytes.NewReader(data))
		if err != nil {
			return
		}
		if a != nil && a.Username == "" {
			t.Fatalf("credentials with an empty user from %x", data)
		}
		var out bytes.Buffer
		if err := WriteBindAuth(&out, a); err != nil {
			t.Fatal(err)
		}
		if a != nil && !bytes.HasPrefix(data, out.Bytes()) {
			t.Fatalf("%x read as %+v, which encodes as %x", data, a, out.Bytes())
		}
	})
}

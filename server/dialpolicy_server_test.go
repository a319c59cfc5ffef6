package server_test

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/burrowtun/burrow/mux"
	"github.com/burrowtun/burrow/server"
)

// TestStreamsAskDialPolicy: TCP and UDP streams of a user allowed
// everything go through the dial policy, whatever form the target takes;
// a plain target still connects.
func TestStreamsAskDialPolicy(t *testing.T) {
	admin := echoTarget(t) // stands in for the admin listener
	ap := netip.MustParseAddrPort(admin)
	port := strconv.Itoa(int(ap.Port()))
	f := newFixture(t, server.Config{Forbidden: []netip.AddrPort{ap}, DialTimeout: 2 * time.Second}, ".*")
	sess, err := f.dial(t, "alice", "alice-secret")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	for _, tc := range []struct{ target, want string }{
		{"0.0.0.0:" + port, "unspecified address"},
		{"[::]:" + port, "unspecified address"},
		{"[::ffff:0.0.0.0]:" + port, "unspecified address"},
		{":" + port, "unspecified address"},
		{"0.0.0.0:22", "unspecified address"},
		{"[::ffff:127.0.0.1]:" + port, "own admin listener"},
		{"[::1]:" + port, "own admin listener"},
		{"[fe80::1%lo]:22", "link-local or cloud metadata"},
		{"[fe80::1%1]:53", "link-local or cloud metadata"},
		{"[fd00:ec2::254%lo]:80", "link-local or cloud metadata"},
	} {
		for _, kind := range []mux.Kind{mux.KindTCP, mux.KindUDP} {
			_, err := mux.Open(sess, mux.Header{Kind: kind, Target: tc.target}, 5*time.Second)
			var re *mux.RemoteError
			if !errors.As(err, &re) || re.Code != mux.CodeDenied || !strings.Contains(re.Message, tc.want) {
				t.Errorf("%v stream to %s: %v, want a denial mentioning %q", kind, tc.target, err, tc.want)
			}
		}
	}
	st, err := mux.Open(sess, mux.Header{Kind: mux.KindTCP, Target: echoTarget(t)}, 5*time.Second)
	if err != nil {
		t.Fatalf("a plain target: %v", err)
	}
	st.Close()
}

// TestReverseSOCKSBindIsItsOwnKind: an allow entry for a reverse TCP
// port does not allow a reverse SOCKS listener on it, which needs its own
// R:host:port/socks entry.
func TestReverseSOCKSBindIsItsOwnKind(t *testing.T) {
	const addr = "127.0.0.1:0" // nothing listens: the bind is refused first
	f := newFixture(t, server.Config{AllowReverse: true}, `R:`+strings.ReplaceAll(addr, ".", `\.`))
	sess, err := f.dial(t, "alice", "alice-secret")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	_, err = mux.Open(sess, mux.Header{Kind: mux.KindBind, Target: "socks:" + addr}, 5*time.Second)
	var re *mux.RemoteError
	want := "target R:" + addr + "/socks is not allowed for user alice"
	if !errors.As(err, &re) || re.Code != mux.CodeDenied || !strings.Contains(re.Message, want) {
		t.Fatalf("socks bind on %s with only an R:%s entry: %v, want a denial %q", addr, addr, err, want)
	}
}

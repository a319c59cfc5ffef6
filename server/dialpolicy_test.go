package server

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/burrowtun/burrow/mux"
	"github.com/miekg/dns"
)

// testPolicy is a server with an admin listener on 127.0.0.1:9090 and its
// tunnel on every address, port 8443, on a machine whose addresses are
// loopback, 192.0.2.7, 2001:db8::7 and fe80::7 on eth0.
func testPolicy(allowLinkLocal bool) *dialPolicy {
	p := newDialPolicy(allowLinkLocal, []netip.AddrPort{
		netip.MustParseAddrPort("127.0.0.1:9090"),
		netip.MustParseAddrPort("[::]:8443"),
	})
	p.localAddrs = func() ([]netip.Addr, error) {
		return []netip.Addr{
			netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1"),
			netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8::7"),
			netip.MustParseAddr("fe80::7%eth0"),
		}, nil
	}
	return p
}

// Why an address is refused, as the refusal words it.
const (
	unspecified = "unspecified address"
	linkLocal   = "link-local or cloud metadata"
	ownListener = "server's own admin listener or tunnel listener"
	unreadable  = "cannot read"
)

// TestDialPolicy is every form of address an attacker can make the server
// dial, as the Control hook gets it: after resolution, with the zone and
// the mapped form the kernel is given. want is the refusal's reason ("" to
// allow), by default and with --allow-link-local.
func TestDialPolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		address           string
		want, wantAllowLL string
	}{
		// Unspecified: Linux connects them to the machine itself, on any
		// port, so none is dialed.
		{"0.0.0.0:9090", unspecified, unspecified},
		{"0.0.0.0:80", unspecified, unspecified},
		{"[::]:9090", unspecified, unspecified},
		{"[::]:8443", unspecified, unspecified},
		{"[::]:80", unspecified, unspecified},
		{"[::ffff:0.0.0.0]:9090", unspecified, unspecified},
		{"[0:0:0:0:0:0:0:0]:9090", unspecified, unspecified},
		{"[::0.0.0.0]:9090", unspecified, unspecified},
		{"[::%lo]:9090", unspecified, unspecified},
		{"[::%1]:80", unspecified, unspecified},
		{"[::ffff:0.0.0.0%lo]:9090", unspecified, unspecified},
		{":9090", unspecified, unspecified}, // an empty host: what Go dials for ":9090"
		{":80", unspecified, unspecified},
		{"0.1.2.3:80", unspecified, unspecified}, // 0.0.0.0/8, "this network"
		{"[::ffff:0.255.255.255]:80", unspecified, unspecified},

		// Link-local and metadata, with and without zones and mapping.
		{"169.254.169.254:80", linkLocal, ""},
		{"[::ffff:169.254.169.254]:80", linkLocal, ""},
		{"[::ffff:a9fe:a9fe]:80", linkLocal, ""},
		{"169.254.0.1:53", linkLocal, ""},
		{"[fe80::1]:22", linkLocal, ""},
		{"[fe80::1%lo]:22", linkLocal, ""},
		{"[fe80::1%1]:22", linkLocal, ""},
		{"[fe80::1%eth0]:53", linkLocal, ""},
		{"[FE80::1%LO]:22", linkLocal, ""},
		{"[febf:ffff::1%2]:22", linkLocal, ""},
		{"[fd00:ec2::254]:80", linkLocal, ""},
		{"[fd00:ec2::254%lo]:80", linkLocal, ""},
		{"[fd00:ec2:0:0:0:0:0:254%1]:80", linkLocal, ""},

		// The server's own listeners through every local form.
		{"127.0.0.1:9090", ownListener, ownListener},
		{"[::ffff:127.0.0.1]:9090", ownListener, ownListener},
		{"[::ffff:7f00:1]:9090", ownListener, ownListener},
		{"127.0.0.2:9090", ownListener, ownListener},
		{"127.255.255.254:9090", ownListener, ownListener},
		{"[::1]:9090", ownListener, ownListener},
		{"[::1%lo]:9090", ownListener, ownListener},
		{"192.0.2.7:9090", ownListener, ownListener},
		{"[::ffff:192.0.2.7]:9090", ownListener, ownListener},
		{"[2001:db8::7]:9090", ownListener, ownListener},
		{"[2001:db8::7%eth0]:9090", ownListener, ownListener},
		{"[fe80::7%eth0]:9090", linkLocal, ownListener},
		{"[fe80::7%lo]:8443", linkLocal, ownListener},
		{"127.0.0.1:8443", ownListener, ownListener},
		{"[::ffff:127.0.0.1]:8443", ownListener, ownListener},
		{"[::1]:8443", ownListener, ownListener},
		{"192.0.2.7:8443", ownListener, ownListener},
		{"[2001:db8::7]:8443", ownListener, ownListener},

		// Allowed: other ports of this machine, other machines on the
		// forbidden ports, and plain targets.
		{"127.0.0.1:80", "", ""},
		{"[::ffff:127.0.0.1]:22", "", ""},
		{"[::1]:22", "", ""},
		{"192.0.2.7:22", "", ""},
		{"203.0.113.5:9090", "", ""},
		{"[::ffff:203.0.113.5]:8443", "", ""},
		{"[2001:db8::99]:8443", "", ""},
		{"[2001:db8::99%eth0]:443", "", ""},
		{"10.0.0.1:443", "", ""},
		{"[fe80::99%eth0]:9091", linkLocal, ""},

		// Anything the hook cannot read as ip:port is not dialed.
		{"localhost:80", unreadable, unreadable},
		{"0:9090", unreadable, unreadable},
		{"127.1:9090", unreadable, unreadable},
		{"0x7f000001:9090", unreadable, unreadable},
		{"127.0.0.1", unreadable, unreadable},
		{"[::1]", unreadable, unreadable},
		{"127.0.0.1:99999", unreadable, unreadable},
		{"", unreadable, unreadable},
		{"/run/burrow.sock", unreadable, unreadable},
	}
	for _, tt := range tests {
		t.Run(tt.address, func(t *testing.T) {
			t.Parallel()
			for _, allowLL := range []bool{false, true} {
				want := tt.want
				if allowLL {
					want = tt.wantAllowLL
				}
				err := testPolicy(allowLL).check(tt.address)
				if want == "" {
					if err != nil {
						t.Errorf("allowLinkLocal=%v: check(%q) = %v, want allowed", allowLL, tt.address, err)
					}
					continue
				}
				wantRefusal(t, err, want)
				if err != nil && tt.address != "" && !strings.Contains(err.Error(), tt.address) {
					t.Errorf("refusal %q does not name the address %q", err, tt.address)
				}
			}
		})
	}
}

// wantRefusal fails unless err is a one-line CodeDenied refusal saying why.
func wantRefusal(t *testing.T, err error, why string) {
	t.Helper()
	var re *mux.RemoteError
	if !errors.As(err, &re) || re.Code != mux.CodeDenied {
		t.Fatalf("got %v, want a CodeDenied refusal mentioning %q", err, why)
	}
	if !strings.Contains(re.Message, why) || strings.ContainsAny(re.Message, "\r\n") {
		t.Errorf("refusal %q, want one line mentioning %q", re.Message, why)
	}
}

// TestDialPolicyLocalAddrsUnknown: when this machine's addresses cannot be
// listed, a forbidden port is refused on every address, and other ports
// are not affected.
func TestDialPolicyLocalAddrsUnknown(t *testing.T) {
	t.Parallel()
	p := newDialPolicy(false, []netip.AddrPort{netip.MustParseAddrPort("[::]:8443")})
	p.localAddrs = func() ([]netip.Addr, error) { return nil, errors.New("no netlink") }
	wantRefusal(t, p.check("198.51.100.1:8443"), ownListener)
	if err := p.check("198.51.100.1:443"); err != nil {
		t.Errorf("check on another port = %v, want allowed", err)
	}
}

// TestDialPolicyOwnAddresses uses this machine's real interface addresses:
// each reaches a listener on every address.
func TestDialPolicyOwnAddresses(t *testing.T) {
	t.Parallel()
	addrs, err := interfaceAddrs()
	if err != nil {
		t.Skipf("cannot list this machine's addresses: %v", err)
	}
	p := newDialPolicy(true, []netip.AddrPort{netip.MustParseAddrPort("[::]:8443")})
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a, 8443).String()
		wantRefusal(t, p.check(ap), ownListener)
		if err := p.check(netip.AddrPortFrom(a, 8444).String()); err != nil {
			t.Errorf("%s on another port: %v, want allowed", a, err)
		}
	}
}

// TestDialerUsesPolicy dials through the server's default Control hook,
// TCP and UDP, so that what the hook sees is what Go gives it: the
// resolved address, with the zone, for literals and shorthands that a
// resolver turns into addresses. The forbidden listener must stay
// unreached, and a legitimate target must still connect.
func TestDialerUsesPolicy(t *testing.T) {
	t.Parallel()
	admin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	adminAP := netip.MustParseAddrPort(admin.Addr().String())
	port := strconv.Itoa(int(adminAP.Port()))
	d := &net.Dialer{Timeout: 2 * time.Second, Control: guardAddresses(false, []netip.AddrPort{adminAP})}
	for _, network := range []string{"tcp", "udp"} {
		for _, tc := range []struct{ host, why string }{
			{"0.0.0.0", unspecified},
			{"[::]", unspecified},
			{"[::ffff:0.0.0.0]", unspecified},
			{"[::%lo]", unspecified},
			{"", unspecified},
			{"127.0.0.1", ownListener},
			{"[::ffff:127.0.0.1]", ownListener},
			{"localhost", ownListener},
			{"[fe80::1%lo]", linkLocal},
			{"[fe80::1%1]", linkLocal},
			{"[fd00:ec2::254%lo]", linkLocal},
			{"0", ""},     // a name to Go's resolver; refused wherever it resolves
			{"127.1", ""}, // likewise
		} {
			target := net.JoinHostPort(strings.Trim(tc.host, "[]"), port)
			if strings.HasPrefix(tc.host, "[") {
				target = tc.host + ":" + port
			}
			c, err := d.DialContext(t.Context(), network, target)
			if err == nil {
				c.Close()
				t.Errorf("%s %s: connected, want refused", network, target)
				continue
			}
			var re *mux.RemoteError
			if tc.why == "" {
				if errors.As(err, &re) && re.Code != mux.CodeDenied {
					t.Errorf("%s %s: %v", network, target, err)
				}
				continue
			}
			t.Run(network+" "+target, func(t *testing.T) { wantRefusal(t, err, tc.why) })
		}
	}
	c, err := d.DialContext(t.Context(), "tcp", other.Addr().String())
	if err != nil {
		t.Fatalf("a legitimate target: %v", err)
	}
	c.Close()
}

// TestDialerPolicyAfterResolution: a host name that resolves to an
// address the policy refuses is refused on that address. A test DNS
// server answers for the names (a DNS answer carries no zone, so zoned
// names, which only /etc/hosts can make, are the literals above).
func TestDialerPolicyAfterResolution(t *testing.T) {
	t.Parallel()
	admin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	adminAP := netip.MustParseAddrPort(admin.Addr().String())
	answers := map[string][]netip.Addr{
		"zero.test.":     {netip.MustParseAddr("0.0.0.0")},
		"zero6.test.":    {netip.MustParseAddr("::")},
		"mapped.test.":   {netip.MustParseAddr("::ffff:0.0.0.0")},
		"meta.test.":     {netip.MustParseAddr("169.254.169.254")},
		"meta6.test.":    {netip.MustParseAddr("fd00:ec2::254")},
		"ll.test.":       {netip.MustParseAddr("fe80::1")},
		"loopback.test.": {netip.MustParseAddr("127.0.0.1")},
	}
	resolver := startTestDNS(t, answers)
	d := &net.Dialer{Timeout: 2 * time.Second, Resolver: resolver,
		Control: guardAddresses(false, []netip.AddrPort{adminAP})}
	port := strconv.Itoa(int(adminAP.Port()))
	for name, why := range map[string]string{
		"zero.test": unspecified, "zero6.test": unspecified, "mapped.test": unspecified,
		"meta.test": linkLocal, "meta6.test": linkLocal, "ll.test": linkLocal,
		"loopback.test": ownListener,
	} {
		for _, network := range []string{"tcp", "udp"} {
			t.Run(network+" "+name, func(t *testing.T) {
				c, err := d.DialContext(t.Context(), network, name+":"+port)
				if err == nil {
					c.Close()
					t.Fatalf("connected to %s, want refused", name)
				}
				wantRefusal(t, err, why)
			})
		}
	}
}

// startTestDNS serves answers (A and AAAA) over UDP on loopback and
// returns a resolver that asks it alone.
func startTestDNS(t *testing.T, answers map[string][]netip.Addr) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(q)
			for _, question := range q.Question {
				for _, a := range answers[strings.ToLower(question.Name)] {
					hdr := dns.RR_Header{Name: question.Name, Class: dns.ClassINET, Ttl: 60}
					switch {
					case question.Qtype == dns.TypeA && a.Is4():
						hdr.Rrtype = dns.TypeA
						m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
					case question.Qtype == dns.TypeAAAA && a.Is6():
						hdr.Rrtype = dns.TypeAAAA
						m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
					}
				}
			}
			w.WriteMsg(m)
		})}
	served := make(chan error, 1)
	go func() { served <- srv.ActivateAndServe() }()
	t.Cleanup(func() {
		srv.Shutdown()
		<-served
	})
	<-started
	addr := pc.LocalAddr().String()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
}

// FuzzDialPolicy feeds the policy addresses as a Control hook could get
// them. It must never panic, must refuse whatever it cannot read, and its
// decision must not depend on an IPv6 zone or on the IPv4-mapped form; a
// link-local, metadata or unspecified address is always refused, and so
// is a forbidden port through loopback.
func FuzzDialPolicy(f *testing.F) {
	for _, s := range []string{
		"0.0.0.0:9090", "[::]:9090", "[::ffff:0.0.0.0]:9090", ":9090", "[::%lo]:8443",
		"[fe80::1%lo]:22", "[fe80::1%1]:22", "[fd00:ec2::254%lo]:80", "169.254.169.254:80",
		"127.0.0.1:9090", "[::ffff:127.0.0.1]:9090", "[::1%lo]:8443", "192.0.2.7:8443",
		"127.0.0.1:80", "203.0.113.5:9090", "[2001:db8::99%eth0]:443", "localhost:80", "0:9090", "",
	} {
		f.Add(s)
	}
	p := testPolicy(false)
	f.Fuzz(func(t *testing.T, address string) {
		err := p.check(address)
		if err != nil {
			var re *mux.RemoteError
			if !errors.As(err, &re) || re.Code != mux.CodeDenied {
				t.Fatalf("check(%q) = %v, want nil or a CodeDenied refusal", address, err)
			}
		}
		ap, perr := netip.ParseAddrPort(address)
		if perr != nil {
			if host, _, serr := net.SplitHostPort(address); (serr != nil || host != "") && err == nil {
				t.Fatalf("check(%q) allowed an address that is not ip:port", address)
			}
			return
		}
		plain := ap.Addr().WithZone("").Unmap()
		mustRefuse := plain.IsUnspecified() || plain.IsLinkLocalUnicast() || plain == awsMetadata ||
			(plain.IsLoopback() && (ap.Port() == 9090 || ap.Port() == 8443))
		if mustRefuse && err == nil {
			t.Fatalf("check(%q) allowed %s", address, plain)
		}
		// The same address, without its zone and unmapped, gets the same answer.
		same := netip.AddrPortFrom(plain, ap.Port()).String()
		if other := p.check(same); (other == nil) != (err == nil) {
			t.Fatalf("check(%q) = %v but check(%q) = %v", address, err, same, other)
		}
		if plain.Is4() {
			mapped := netip.AddrPortFrom(netip.AddrFrom16(plain.As16()), ap.Port()).String()
			if other := p.check(mapped); (other == nil) != (err == nil) {
				t.Fatalf("check(%q) = %v but check(%q) = %v", address, err, mapped, other)
			}
		}
	})
}

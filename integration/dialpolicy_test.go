package integration

// The server's dial policy against the binary: a user allowed every
// target (the default of 'user add') cannot reach the server's own admin
// or tunnel listener through an unspecified, mapped or loopback form, nor
// a link-local or metadata address through an IPv6 zone, by TCP, UDP or
// SOCKS, nor through a host name that resolves to one; and a reverse
// SOCKS bind needs an allow entry of its own.

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/burrowtun/burrow/integration/harness"
)

// dialPolicyHosts is /etc/hosts as the server sees it, when it can be
// given one (see startDialPolicyServer): names for the forms the policy
// refuses, zoned ones included, which only a hosts file can make.
const dialPolicyHosts = `127.0.0.1 localhost
::1 localhost
0.0.0.0 zero.dialpolicy.test
:: zero6.dialpolicy.test
fe80::1%lo zoned.dialpolicy.test
fd00:ec2::254%lo metadata.dialpolicy.test
`

// Why a target is refused, as the server words it.
const (
	policyUnspecified = "is an unspecified address"
	policyOwnListener = "reaches the server's own admin listener or tunnel listener"
	policyLinkLocal   = "is a link-local or cloud metadata address"
)

// startDialPolicyServer starts 'burrow server' with cert, authfile and
// args on 127.0.0.1:0 in a mount namespace of its own whose /etc/hosts is
// dialPolicyHosts, when unshare(1) can make one (as root); otherwise
// with the machine's. named says which.
func startDialPolicyServer(t *testing.T, cert harness.CertPair, authfile string, args ...string) (srv *harness.Server, named bool) {
	t.Helper()
	argv := append([]string{burrow.Path(), "server", "--tls-cert", cert.CertFile, "--tls-key", cert.KeyFile,
		"--authfile", authfile, "--listen", "127.0.0.1:0"}, args...)
	if unshare, err := exec.LookPath("unshare"); err == nil && exec.Command(unshare, "-m", "true").Run() == nil {
		hosts := filepath.Join(t.TempDir(), "hosts")
		if err := os.WriteFile(hosts, []byte(dialPolicyHosts), 0o644); err != nil {
			t.Fatal(err)
		}
		// unshare makes the mount namespace's propagation private, so the
		// bind mount stays in it; sh and unshare exec, so the PID is the
		// server's.
		argv = append([]string{unshare, "-m", "sh", "-c", `mount --bind "$0" /etc/hosts && exec "$@"`, hosts}, argv...)
		named = true
	} else {
		t.Log("unshare -m is not available (it needs root): host names are not tried, only literal addresses")
	}
	// argv[0] execs the server in the end: the PID is the server's.
	p := harness.StartCmd(t, "server", exec.Command(argv[0], argv[1:]...), 0)
	m := p.WaitLog(t, harness.ListeningLine, harness.StartTimeout)
	return &harness.Server{Proc: p, Addr: m[1], URL: "wss://" + m[1], Cert: cert, Authfile: authfile}, named
}

// dialPolicySOCKS asks the SOCKS5 server at proxy, without
// authentication, to CONNECT to host:port, with host sent as an IPv4
// address, an IPv6 address (16 bytes, so a mapped address stays mapped)
// or a name, by atyp (1, 4, 3). It returns the reply code and the
// connection, open when the code is 0.
func dialPolicySOCKS(t *testing.T, proxy string, atyp byte, host string, port uint16) (byte, *net.TCPConn) {
	t.Helper()
	c := harness.DialLocal(t, proxy)
	req := []byte{5, 1, 0}
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	var greet [2]byte
	if _, err := io.ReadFull(c, greet[:]); err != nil || greet != [2]byte{5, 0} {
		t.Fatalf("socks greeting: %v %v", greet, err)
	}
	req = []byte{5, 1, 0, atyp}
	switch atyp {
	case 1:
		a := netip.MustParseAddr(host).As4()
		req = append(req, a[:]...)
	case 4:
		a := netip.MustParseAddr(host).As16()
		req = append(req, a[:]...)
	default:
		req = append(append(req, byte(len(host))), host...)
	}
	req = binary.BigEndian.AppendUint16(req, port)
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	var rep [10]byte // VER REP RSV ATYP(1) ADDR(4) PORT, as the client answers
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		t.Fatalf("socks reply to %s: %v", host, err)
	}
	if rep[1] != 0 {
		c.Close()
		return rep[1], nil
	}
	t.Cleanup(func() { c.Close() })
	return 0, c
}

func TestDialPolicyRefusesLocalForms(t *testing.T) {
	t.Parallel()
	cert := burrow.NewCert(t, "localhost", "127.0.0.1")
	authfile := filepath.Join(t.TempDir(), "users.json")
	burrow.NewUser(t, authfile, harness.TestUser, harness.TestPass) // any target
	srv, named := startDialPolicyServer(t, cert, authfile, "--admin", "127.0.0.1:0")
	_, adminPort, _ := net.SplitHostPort(srv.AdminAddr(t))
	_, tunnelPort, _ := net.SplitHostPort(srv.Addr)
	echo := harness.StartEcho(t)
	udpEcho := startDatagramEcho(t)
	udpPort := strconv.Itoa(udpEcho.Port)

	type refusal struct{ target, why string }
	tcp := []refusal{
		{"0.0.0.0:" + adminPort, policyUnspecified},
		{"[::]:" + adminPort, policyUnspecified},
		{"[::ffff:0.0.0.0]:" + adminPort, policyUnspecified},
		{"127.0.0.1:" + adminPort, policyOwnListener},
		{"[::ffff:127.0.0.1]:" + adminPort, policyOwnListener},
		{"0.0.0.0:" + tunnelPort, policyUnspecified},
		{"[::]:" + tunnelPort, policyUnspecified},
		{"127.0.0.1:" + tunnelPort, policyOwnListener},
		{"[::ffff:127.0.0.1]:" + tunnelPort, policyOwnListener},
		{"localhost:" + tunnelPort, policyOwnListener},
		{"[fe80::1%lo]:22", policyLinkLocal},
		{"[fe80::1%1]:22", policyLinkLocal},
		{"[fd00:ec2::254%lo]:80", policyLinkLocal},
	}
	udp := []refusal{
		{"0.0.0.0:" + udpPort, policyUnspecified}, // 0.0.0.0 reaches the echo on 127.0.0.1
		{"[::]:" + udpPort, policyUnspecified},
		{"[fe80::1%lo]:53", policyLinkLocal},
		{"[fe80::1%1]:53", policyLinkLocal},
		{"[fd00:ec2::254%lo]:53", policyLinkLocal},
	}
	if named {
		tcp = append(tcp,
			refusal{"zero.dialpolicy.test:" + adminPort, policyUnspecified},
			refusal{"zero6.dialpolicy.test:" + adminPort, policyUnspecified},
			refusal{"zoned.dialpolicy.test:22", policyLinkLocal},
			refusal{"metadata.dialpolicy.test:80", policyLinkLocal})
		udp = append(udp,
			refusal{"zero.dialpolicy.test:" + udpPort, policyUnspecified},
			refusal{"zoned.dialpolicy.test:53", policyLinkLocal},
			refusal{"metadata.dialpolicy.test:53", policyLinkLocal})
	}
	remotes := []string{"127.0.0.1:0:" + echo, "127.0.0.1:0:" + udpEcho.String() + "/udp", "127.0.0.1:0:socks"}
	for _, r := range tcp {
		remotes = append(remotes, "127.0.0.1:0:"+r.target)
	}
	for _, r := range udp {
		remotes = append(remotes, "127.0.0.1:0:"+r.target+"/udp")
	}
	client, locals := burrow.StartClient(t, srv.URL, harness.TestUser+":"+harness.TestPass, []string{"--fingerprint", cert.Fingerprint}, remotes...)
	echoLocal, udpLocal, socksLocal := locals[0], locals[1], locals[2]
	tcpLocals, udpLocals := locals[3:3+len(tcp)], locals[3+len(tcp):]

	// serverRefused waits for the server's refusal of target, and the
	// client's line with the same reason.
	serverRefused := func(t *testing.T, kind, target, why string) {
		t.Helper()
		srv.WaitLog(t, regexp.MustCompile(`msg="stream refused" .*kind=`+kind+` target=`+regexp.QuoteMeta(target)+` .*`+regexp.QuoteMeta(why)), harness.IOTimeout)
	}

	for i, r := range tcp {
		t.Run("tcp "+r.target, func(t *testing.T) {
			// What the attack sent: the admin's status page, asked through
			// a forward. Nothing may come back.
			// The refusal resets the forward, maybe before the dial
			// has returned.
			if c := harness.DialRefused(t, tcpLocals[i]); c != nil {
				defer c.Close()
				got, err := harness.Exchange(c, []byte("GET /status HTTP/1.0\r\nHost: x\r\n\r\n"))
				if len(got) != 0 {
					t.Fatalf("%s answered through the tunnel: %.200q", r.target, got)
				}
				// The request may or may not be written before the
				// refusal; either way the forward is closed, not left open.
				if err != nil && strings.Contains(err.Error(), "timeout") {
					t.Fatalf("a refused forward: %v, want it closed", err)
				}
			}
			serverRefused(t, "tcp", r.target, r.why)
			client.WaitLog(t, regexp.MustCompile(`msg="forward refused" local=`+regexp.QuoteMeta(tcpLocals[i])+` .*`+regexp.QuoteMeta(r.why)), harness.IOTimeout)
		})
	}

	for i, r := range udp {
		t.Run("udp "+r.target, func(t *testing.T) {
			c, err := net.Dial("udp", udpLocals[i])
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("a datagram the dial policy refuses")); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(time.Second))
			if n, err := c.Read(make([]byte, 64)); err == nil {
				t.Fatalf("%d bytes came back from %s", n, r.target)
			}
			serverRefused(t, "udp", r.target, r.why)
			client.WaitLog(t, regexp.MustCompile(`msg="udp flow refused" local=`+regexp.QuoteMeta(udpLocals[i])+` .*`+regexp.QuoteMeta(r.why)), harness.IOTimeout)
		})
	}

	t.Run("socks", func(t *testing.T) {
		admin, _ := strconv.ParseUint(adminPort, 10, 16)
		tunnel, _ := strconv.ParseUint(tunnelPort, 10, 16)
		cases := []struct {
			atyp   byte
			host   string
			port   uint64
			target string // as the server logs it
			why    string
		}{
			{1, "0.0.0.0", admin, "0.0.0.0:" + adminPort, policyUnspecified},
			{4, "::", admin, "[::]:" + adminPort, policyUnspecified},
			{4, "::ffff:0.0.0.0", admin, "[::ffff:0.0.0.0]:" + adminPort, policyUnspecified},
			{3, "0.0.0.0", admin, "0.0.0.0:" + adminPort, policyUnspecified},
			{4, "::ffff:127.0.0.1", tunnel, "[::ffff:127.0.0.1]:" + tunnelPort, policyOwnListener},
			// SOCKS cannot write a zone (an IPv6 address is 16 bytes, a
			// name may not hold ':'): zoned addresses come by name.
			{4, "fe80::1", 22, "[fe80::1]:22", policyLinkLocal},
		}
		if named {
			for _, n := range []struct {
				host string
				port uint64
				why  string
			}{
				{"zero.dialpolicy.test", admin, policyUnspecified},
				{"zoned.dialpolicy.test", 22, policyLinkLocal},
				{"metadata.dialpolicy.test", 80, policyLinkLocal},
			} {
				cases = append(cases, struct {
					atyp   byte
					host   string
					port   uint64
					target string
					why    string
				}{3, n.host, n.port, n.host + ":" + strconv.FormatUint(n.port, 10), n.why})
			}
		}
		for _, tc := range cases {
			before := srv.CountLog(regexp.MustCompile(`msg="stream refused" .*target=` + regexp.QuoteMeta(tc.target) + ` .*` + regexp.QuoteMeta(tc.why)))
			// SOCKS reply 2: connection not allowed by ruleset.
			if rep, _ := dialPolicySOCKS(t, socksLocal, tc.atyp, tc.host, uint16(tc.port)); rep != 2 {
				t.Errorf("socks to %s: reply %d, want 2 (not allowed)", tc.target, rep)
				continue
			}
			srv.WaitLogCount(t, regexp.MustCompile(`msg="stream refused" .*target=`+regexp.QuoteMeta(tc.target)+` .*`+regexp.QuoteMeta(tc.why)), before+1, harness.IOTimeout)
		}
	})

	t.Run("legitimate forwards", func(t *testing.T) {
		harness.EchoRoundTrip(t, echoLocal, []byte("a plain target still works"))
		ap := netip.MustParseAddrPort(echo)
		rep, c := dialPolicySOCKS(t, socksLocal, 1, ap.Addr().String(), ap.Port())
		if rep != 0 {
			t.Fatalf("socks to %s: reply %d, want 0", echo, rep)
		}
		if err := harness.EchoOver(c, []byte("through socks")); err != nil {
			t.Fatal(err)
		}
		u, err := net.Dial("udp", udpLocal)
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		u.SetDeadline(time.Now().Add(harness.IOTimeout))
		buf := make([]byte, 64)
		if _, err := u.Write([]byte("a datagram")); err != nil {
			t.Fatal(err)
		}
		if n, err := u.Read(buf); err != nil || string(buf[:n]) != "a datagram" {
			t.Fatalf("udp echo: %q, %v", buf[:n], err)
		}
	})

	if n := srv.CountLog(harness.SessionOpenedLine); n != 1 {
		t.Errorf("server logged %d sessions, want 1: refusals must not cost the session", n)
	}
}

// TestReverseSOCKSNeedsItsOwnEntry: an allow entry for reverse TCP ports
// does not allow a reverse SOCKS listener on them, which needs an
// R:host:port/socks entry; plain reverse ports still work.
func TestReverseSOCKSNeedsItsOwnEntry(t *testing.T) {
	t.Parallel()
	const carol, dave = "carol", "dave"
	authfile := filepath.Join(t.TempDir(), "users.json")
	burrow.NewUser(t, authfile, carol, harness.TestPass, `R:127\.0\.0\.1:[0-9]+`)
	burrow.NewUser(t, authfile, dave, harness.TestPass, `R:127\.0\.0\.1:[0-9]+/socks`)
	srv := burrow.StartServer(t, burrow.NewCert(t, "localhost", "127.0.0.1"), authfile, "--reverse")
	echo := harness.StartEcho(t)

	t.Run("socks bind with a reverse TCP entry", func(t *testing.T) {
		port := strconv.Itoa(randomConfigPort())
		_, line := runFailing(t, []string{"BURROW_AUTH=" + carol + ":" + harness.TestPass},
			"client", "--fingerprint", srv.Cert.Fingerprint, srv.URL, "R:127.0.0.1:"+port+":socks")
		wantWords(t, line, "refused", "R:127.0.0.1:"+port+"/socks is not allowed for user "+carol)
	})

	t.Run("reverse TCP with the same entry", func(t *testing.T) {
		_, port, _ := startReverseClient(t, "carol-client", srv, carol+":"+harness.TestPass, nil,
			func(port int) []string { return []string{"R:127.0.0.1:" + strconv.Itoa(port) + ":" + echo} })
		harness.EchoRoundTrip(t, "127.0.0.1:"+strconv.Itoa(port), []byte("a reverse port is still a reverse port"))
	})

	t.Run("socks bind with a socks entry", func(t *testing.T) {
		_, port, _ := startReverseClient(t, "dave-client", srv, dave+":"+harness.TestPass, nil,
			func(port int) []string { return []string{"R:127.0.0.1:" + strconv.Itoa(port) + ":socks"} })
		ap := netip.MustParseAddrPort(echo)
		rep, c := dialPolicySOCKS(t, "127.0.0.1:"+strconv.Itoa(port), 1, ap.Addr().String(), ap.Port())
		if rep != 0 {
			t.Fatalf("reverse socks to %s: reply %d, want 0", echo, rep)
		}
		if err := harness.EchoOver(c, []byte("through a reverse socks listener")); err != nil {
			t.Fatal(err)
		}
	})
}

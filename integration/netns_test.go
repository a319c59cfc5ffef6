package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
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

// netnsHelperEnv, when set in the environment of the test binary, makes it
// a small network helper instead of running tests (see netnsHelper), for
// TestOnlyHTTPS to run inside a network namespace with 'ip netns exec'.
// It is checked in init, before TestMain would build the binary again.
const netnsHelperEnv = "INTEGRATION_NETNS_HELPER"

func init() {
	if os.Getenv(netnsHelperEnv) == "1" {
		os.Exit(netnsHelper(os.Args[1:]))
	}
}

// netnsHelper runs one network check and prints its outcome:
//
//	dial ADDR               connect to ADDR within 3s; exit 0 if it connects, 3 if it cannot
//	echo ADDR SIZE SEED     send SIZE bytes made from SEED to an echo target behind ADDR,
//	                        half-close, and check that the same bytes come back
func netnsHelper(args []string) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "helper: "+format+"\n", a...)
		return 1
	}
	switch {
	case len(args) == 2 && args[0] == "dial":
		c, err := net.DialTimeout("tcp", args[1], 3*time.Second)
		if err != nil {
			fmt.Printf("cannot connect: %v\n", err)
			return 3
		}
		c.Close()
		fmt.Println("connected")
		return 0
	case len(args) == 4 && args[0] == "echo":
		size, err1 := strconv.ParseInt(args[2], 10, 64)
		seed, err2 := strconv.ParseUint(args[3], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return fail("%v", err)
		}
		payload := seededPayload(seed, int(size))
		c, err := net.DialTimeout("tcp", args[1], harness.IOTimeout)
		if err != nil {
			return fail("%v", err)
		}
		defer c.Close()
		if err := harness.EchoOver(c.(*net.TCPConn), payload); err != nil {
			return fail("%v", err)
		}
		fmt.Printf("echoed %d bytes, sha256 %x\n", size, sha256.Sum256(payload))
		return 0
	}
	return fail("usage: dial ADDR | echo ADDR SIZE SEED, got %q", args)
}

// netNamespace is a network namespace joined to the host by a veth pair,
// with an address at each end.
type netNamespace struct {
	ip       string // path of iproute2's ip
	name     string
	hostIP   string // the host's end of the veth
	insideIP string // the namespace's end
}

// run runs a command (in the namespace if inNS) to completion within
// 10 seconds and returns its combined output, failing the test if it fails.
func (ns *netNamespace) run(t *testing.T, inNS bool, name string, args ...string) string {
	t.Helper()
	out, err := ns.try(inNS, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func (ns *netNamespace) try(inNS bool, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if inNS {
		args = append([]string{"netns", "exec", ns.name, name}, args...)
		name = ns.ip
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// newNetNamespace makes a namespace with a veth pair to the host in a
// random /30 of 10.200.0.0/16 that no interface here uses yet. The
// addresses exist only on this machine, between the host and the
// namespace. Everything is deleted when the test ends, whatever happened.
// It skips the test where namespaces cannot be made (not root, no
// iproute2, a container without the capability).
func newNetNamespace(t *testing.T) *netNamespace {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	ip := extProgram(t, "ip")
	id := rand.IntN(100000)
	ns := &netNamespace{ip: ip, name: fmt.Sprintf("burrowtest%05d", id)}
	hostIf, nsIf := fmt.Sprintf("btst%05dh", id), fmt.Sprintf("btst%05dn", id)
	used := map[string]bool{}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				used[ipn.IP.Mask(net.CIDRMask(24, 32)).String()] = true
			}
		}
	}
	for range 20 {
		third := rand.IntN(256)
		if !used[fmt.Sprintf("10.200.%d.0", third)] {
			ns.hostIP, ns.insideIP = fmt.Sprintf("10.200.%d.1", third), fmt.Sprintf("10.200.%d.2", third)
			break
		}
	}
	if ns.hostIP == "" {
		t.Skip("no free /24 in 10.200.0.0/16 for the namespace's veth pair")
	}
	if out, err := ns.try(false, ns.ip, "netns", "add", ns.name); err != nil {
		t.Skipf("this machine does not allow network namespaces: ip netns add: %v: %s", err, strings.TrimSpace(out))
	}
	t.Cleanup(func() {
		// Deleting the namespace deletes its end of the veth pair, and
		// with it the host's end; the second command is for a pair that
		// never got into the namespace.
		if out, err := ns.try(false, ns.ip, "netns", "delete", ns.name); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", ns.name, err, out)
		}
		ns.try(false, ns.ip, "link", "delete", hostIf)
	})
	ns.run(t, false, ns.ip, "link", "add", hostIf, "type", "veth", "peer", "name", nsIf)
	ns.run(t, false, ns.ip, "link", "set", nsIf, "netns", ns.name)
	ns.run(t, false, ns.ip, "addr", "add", ns.hostIP+"/30", "dev", hostIf)
	ns.run(t, false, ns.ip, "link", "set", hostIf, "up")
	ns.run(t, true, ns.ip, "addr", "add", ns.insideIP+"/30", "dev", nsIf)
	ns.run(t, true, ns.ip, "link", "set", nsIf, "up")
	ns.run(t, true, ns.ip, "link", "set", "lo", "up")
	return ns
}

// allowOnly lets traffic leave the namespace only over loopback and to
// addr (host:port), with nftables where it is installed, else iptables;
// anything else is rejected at once. It skips the test if neither is
// installed.
func (ns *netNamespace) allowOnly(t *testing.T, addr string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	if nft, ok := findExtProgram("nft"); ok {
		ruleset := fmt.Sprintf(`table inet burrowtest {
    chain output {
        type filter hook output priority 0; policy drop;
        oif "lo" accept
        ip daddr %s tcp dport %s accept
        reject
    }
}
`, host, port)
		file := filepath.Join(t.TempDir(), "only-proxy.nft")
		if err := os.WriteFile(file, []byte(ruleset), 0o644); err != nil {
			t.Fatal(err)
		}
		ns.run(t, true, nft, "-f", file)
		return
	}
	ipt, ok := findExtProgram("iptables")
	if !ok {
		t.Skip("neither nft (Debian package nftables) nor iptables is installed to firewall the namespace")
	}
	ns.run(t, true, ipt, "-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT")
	ns.run(t, true, ipt, "-A", "OUTPUT", "-p", "tcp", "-d", host, "--dport", port, "-j", "ACCEPT")
	ns.run(t, true, ipt, "-A", "OUTPUT", "-j", "REJECT")
}

// helper runs netnsHelper in the namespace and returns its output and
// exit code.
func (ns *netNamespace) helper(t *testing.T, args ...string) (string, int) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*harness.IOTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, ns.ip, append([]string{"netns", "exec", ns.name, self}, args...)...)
	cmd.Env = append(harness.CleanEnv(), netnsHelperEnv+"=1")
	cmd.WaitDelay = time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &exit) && ctx.Err() == nil:
		return out.String(), exit.ExitCode()
	}
	t.Fatalf("helper %q in namespace %s: %v\n%s", args, ns.name, err, out.String())
	return "", 0
}

// TestOnlyHTTPS runs a client in a network namespace whose only way out is
// a squid proxy on the host, with a firewall that lets out nothing but
// connections to the proxy's port: the server cannot be reached directly,
// yet the client reaches it through the proxy and a forward works, used
// from inside the namespace. Everything stays on this machine.
func TestOnlyHTTPS(t *testing.T) {
	t.Parallel()
	extProgram(t, "squid")
	if _, ok := findExtProgram("nft"); !ok {
		extProgram(t, "iptables")
	}
	ns := newNetNamespace(t)

	cert := burrow.NewCert(t, ns.hostIP)
	authfile := filepath.Join(t.TempDir(), "users.json")
	burrow.NewUser(t, authfile, harness.TestUser, harness.TestPass)
	srv := burrow.StartServer(t, cert, authfile, "--listen", net.JoinHostPort(ns.hostIP, "0"))
	_, srvPort, _ := net.SplitHostPort(srv.Addr)
	sq := startSquid(t, squidConfig{host: ns.hostIP, sslPorts: []string{srvPort}, clients: ns.insideIP + "/32"})
	echo := harness.StartEcho(t) // on the host's loopback: the server reaches it, the namespace cannot

	// Before the firewall the server is reachable from the namespace, so
	// what fails below fails because of the firewall.
	if out, code := ns.helper(t, "dial", srv.Addr); code != 0 {
		t.Fatalf("before the firewall, the namespace cannot reach the server at %s: %s", srv.Addr, out)
	}
	ns.allowOnly(t, sq.addr)
	if out, code := ns.helper(t, "dial", srv.Addr); code != 3 {
		t.Fatalf("with the firewall, a direct connection from the namespace to the server: %s (exit %d); want it refused", out, code)
	} else {
		t.Logf("direct connection to the server from the namespace: %s", strings.TrimSpace(out))
	}
	if out, code := ns.helper(t, "dial", sq.addr); code != 0 {
		t.Fatalf("with the firewall, the namespace cannot reach the proxy at %s: %s", sq.addr, out)
	}

	inNS := func(name string, args ...string) *harness.Proc {
		cmd := exec.Command(ns.ip, append([]string{"netns", "exec", ns.name, burrow.Path()}, args...)...)
		cmd.Env = append(append(harness.CleanEnv(), clearProxyEnv...), "BURROW_AUTH="+harness.TestUser+":"+harness.TestPass)
		return harness.StartCmd(t, name, cmd, 0)
	}
	remote := "127.0.0.1:0:" + echo

	// Without the proxy the client cannot get out.
	direct := inNS("direct-client", "client", "--fingerprint", cert.Fingerprint, "--max-retry-count", "1",
		"--max-retry-interval", "500ms", srv.URL, remote)
	if code := direct.WaitExit(t, harness.ExitTimeout); code == 0 {
		t.Errorf("a client in the namespace without the proxy exited with code 0, want failure")
	}
	if direct.CountLog(harness.ConnectedLine) != 0 {
		t.Errorf("a client in the namespace connected to the server without the proxy")
	}
	if _, other := harness.StderrLines(direct); len(other) > 0 {
		t.Logf("client without the proxy: %s", other[len(other)-1])
	}

	client := inNS("client", "client", "--proxy", "http://"+sq.addr, "--fingerprint", cert.Fingerprint, srv.URL, remote)
	local := client.WaitLog(t, harness.ForwardLine, harness.StartTimeout)[1]
	client.WaitLog(t, harness.ConnectedLine, harness.StartTimeout)
	wantLogLine(t, client, "using proxy", "proxy=http://"+sq.addr)

	const size = 1 << 20
	seed := rand.Uint64()
	out, code := ns.helper(t, "echo", local, strconv.Itoa(size), strconv.FormatUint(seed, 10))
	if code != 0 {
		t.Fatalf("a connection to the forward %s inside the namespace: exit %d: %s", local, code, out)
	}
	payload := seededPayload(seed, size)
	if want := fmt.Sprintf("echoed %d bytes, sha256 %x", size, sha256.Sum256(payload)); !strings.Contains(out, want) {
		t.Errorf("helper said %q, want %q", out, want)
	}
	m := srv.WaitLog(t, regexp.MustCompile(`msg="session opened".* source=(\S+)`), harness.IOTimeout)
	if m[1] != ns.hostIP {
		t.Errorf("the server saw the session from %s, want the proxy's address %s", m[1], ns.hostIP)
	}

	stopClientCleanly(t, client) // squid logs a tunnel when it closes
	sq.waitTunnelLogged(t, srv.Addr, "-")
	if data, _ := os.ReadFile(sq.accessLog); !regexp.MustCompile(`(?m) ` + regexp.QuoteMeta(ns.insideIP) + ` TCP_TUNNEL/200 `).Match(data) {
		t.Errorf("squid's access log shows no tunnel from %s:\n%s", ns.insideIP, data)
	}
}

// seededPayload returns size pseudo-random bytes made from seed, the same
// in the test and in the helper.
func seededPayload(seed uint64, size int) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	payload := make([]byte, size)
	rand.NewChaCha8(key).Read(payload)
	return payload
}

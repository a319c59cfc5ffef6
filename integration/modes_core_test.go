package integration

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/proxy"
	"golang.org/x/sys/unix"
)

// The forwarding modes beyond local TCP, each through the real binary.

// startUDPEcho answers every datagram with itself, from 127.0.0.1:0.
func startUDPEcho(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	bigBuffers(pc.(*net.UDPConn))
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	return pc.LocalAddr().String()
}

// udpRoundTrips sends datagrams of mixed sizes to addr, one at a time,
// and checks each comes back whole and unchanged.
func udpRoundTrips(t *testing.T, addr string, n int) {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sizes := []int{1, 100, 1400, 9000, 65000}
	buf := make([]byte, 65535)
	for i := range n {
		msg := make([]byte, sizes[i%len(sizes)])
		rand.Read(msg)
		var got []byte
		c.Write(msg)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if k, err := c.Read(buf); err == nil {
			got = buf[:k]
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("datagram %d (%d bytes) came back as %d bytes", i, len(msg), len(got))
		}
	}
}

func TestUDPForwardAndReverse(t *testing.T) {
	t.Parallel()
	echo := startUDPEcho(t)
	rport := freeishPort(t)
	tun := startTunnel(t, nil, []string{"--reverse"}, nil, "127.0.0.1:0:"+echo+"/udp")
	udpRoundTrips(t, tun.locals[0], 25)

	// Reverse: the server listens, the client relays to the echo.
	client := startProc(t, "client-r", "", []string{"BURROW_AUTH=" + testUser + ":" + testPass},
		"client", "--fingerprint", tun.srv.cert.fingerprint, tun.srv.url, "R:127.0.0.1:"+rport+":"+echo+"/udp")
	client.waitLog(t, regexp.MustCompile(`msg="reverse listening on the server"`), startTimeout)
	udpRoundTrips(t, "127.0.0.1:"+rport, 25)
}

// freeishPort picks a random high port for a reverse remote, which needs
// a fixed port. A collision makes the bind fail loudly, not silently.
func freeishPort(t *testing.T) string {
	t.Helper()
	for range 50 {
		p := 20000 + mathrand.IntN(30000)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		l.Close()
		pc, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		pc.Close()
		return strconv.Itoa(p)
	}
	t.Fatal("no free port found")
	return ""
}

func TestSOCKS(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	_, echoPort, _ := net.SplitHostPort(echo)
	srv := startTestServer(t, nil, "--reverse")
	rport := freeishPort(t)
	client := startProc(t, "client", "", []string{"BURROW_AUTH=" + testUser + ":" + testPass},
		"client", "--fingerprint", srv.cert.fingerprint, "--socks-auth", "sock:s3cret",
		srv.url, "127.0.0.1:0:socks", "R:127.0.0.1:"+rport+":socks")
	locals := []string{client.waitLog(t, forwardLine, startTimeout)[1]}
	client.waitLog(t, regexp.MustCompile(`msg="reverse listening on the server"`), startTimeout)

	through := func(socksAddr string, auth *proxy.Auth, target string) error {
		d, err := proxy.SOCKS5("tcp", socksAddr, auth, &net.Dialer{Timeout: ioTimeout})
		if err != nil {
			return err
		}
		c, err := d.Dial("tcp", target)
		if err != nil {
			return err
		}
		defer c.Close()
		return echoOver(c.(*net.TCPConn), []byte("through socks to "+target))
	}
	// A host name, resolved on the far side.
	if err := through(locals[0], &proxy.Auth{User: "sock", Password: "s3cret"}, "localhost:"+echoPort); err != nil {
		t.Fatalf("socks with the right password: %v", err)
	}
	if err := through(locals[0], &proxy.Auth{User: "sock", Password: "wrong"}, "localhost:"+echoPort); err == nil {
		t.Fatal("socks accepted a wrong password")
	}
	client.waitLog(t, regexp.MustCompile(`msg="socks request failed".*wrong username or password`), ioTimeout)
	// R:socks: the server's listener, connections leave from the client.
	if err := through("127.0.0.1:"+rport, nil, "localhost:"+echoPort); err != nil {
		t.Fatalf("R:socks: %v", err)
	}
	// A target the far side refuses is a SOCKS error, not a hang.
	if err := through(locals[0], &proxy.Auth{User: "sock", Password: "s3cret"}, "127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("socks to a closed port: %v, want connection refused", err)
	}
	if _, err := exec.LookPath("curl"); err == nil {
		for _, tc := range []struct{ name, proxy string }{
			{"socks", "sock:s3cret@" + locals[0]},
			{"R:socks", "127.0.0.1:" + rport},
		} {
			page := "hello through " + tc.name
			out, err := exec.Command("curl", "-sS", "--max-time", "10", "--socks5-hostname", tc.proxy,
				"http://localhost:"+strconv.Itoa(startHTTP(t, page))+"/").CombinedOutput()
			if err != nil || string(out) != page {
				t.Fatalf("curl --socks5-hostname through %s: %v %q", tc.name, err, out)
			}
		}
		out, err := exec.Command("curl", "-sS", "--max-time", "10", "--socks5-hostname", "sock:nope@"+locals[0],
			"http://localhost:"+strconv.Itoa(startHTTP(t, "secret page"))+"/").CombinedOutput()
		if err == nil || strings.Contains(string(out), "secret page") {
			t.Fatalf("curl with a wrong SOCKS password got through: %q", out)
		}
	}
}

// startHTTP serves body on 127.0.0.1:0 and returns the port.
func startHTTP(t *testing.T, body string) int {
	t.Helper()
	addr := startTarget(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(ioTimeout))
		buf := make([]byte, 4096)
		c.Read(buf)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	})
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	return port
}

// TestReverseLifecycle: a killed client's reverse port is released within
// the keepalive timeout and bound again when it comes back; another user
// asking for a taken port is told who holds it.
func TestReverseLifecycle(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	srv := startTestServer(t, nil, "--reverse", "--keepalive", "1s")
	newUser(t, srv.authfile, "bob", "bob-pass")
	// The server re-reads users only on SIGHUP.
	srv.signal(t, syscall.SIGHUP)
	srv.waitLog(t, regexp.MustCompile(`msg="users reloaded" users=2`), ioTimeout)
	rport := freeishPort(t)
	remote := "R:127.0.0.1:" + rport + ":" + echo
	start := func(name, auth string) *proc {
		p := startProc(t, name, "", []string{"BURROW_AUTH=" + auth},
			"client", "--keepalive", "1s", "--fingerprint", srv.cert.fingerprint, srv.url, remote)
		p.waitLog(t, regexp.MustCompile(`msg="reverse listening on the server"`), startTimeout)
		return p
	}
	first := start("client-1", testUser+":"+testPass)
	echoRoundTrip(t, "127.0.0.1:"+rport, []byte("reverse"))

	first.kill(t)
	killed := time.Now()
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+rport, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Since(killed) > 5*time.Second {
			t.Fatalf("reverse port still open %v after the client was killed", time.Since(killed))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("reverse port released %v after SIGKILL", time.Since(killed).Round(10*time.Millisecond))

	start("client-2", testUser+":"+testPass)
	echoRoundTrip(t, "127.0.0.1:"+rport, []byte("reverse again"))

	_, line := runFailing(t, []string{"BURROW_AUTH=bob:bob-pass"},
		"client", "--fingerprint", srv.cert.fingerprint, srv.url, remote)
	if !strings.Contains(line, "127.0.0.1:"+rport) || !strings.Contains(line, "user "+testUser) {
		t.Errorf("second user's client said %q, want the port and its holder", line)
	}
}

// TestStdio carries the client's stdin/stdout as one connection, the way
// ssh's ProxyCommand uses it, and exits when the far end is done.
func TestStdio(t *testing.T) {
	t.Parallel()
	srv := startTestServer(t, nil)
	target := startTarget(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(ioTimeout))
		data, _ := io.ReadAll(c)
		fmt.Fprintf(c, "got %d bytes", len(data))
		c.CloseWrite()
	})
	payload := strings.Repeat("stdio payload ", 10000)
	cmd := exec.Command(burrowBin, "client", "--fingerprint", srv.cert.fingerprint, srv.url, "stdio:"+target)
	cmd.Env = append(cmd.Environ(), "BURROW_AUTH="+testUser+":"+testPass)
	cmd.Stdin = strings.NewReader(payload)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	done := make(chan struct{})
	var out []byte
	var err error
	go func() {
		out, err = cmd.Output()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("stdio client did not exit; stderr:\n%s", stderr.String())
	}
	if err != nil || string(out) != fmt.Sprintf("got %d bytes", len(payload)) {
		t.Fatalf("stdio: %v, stdout %q, stderr:\n%s", err, out, stderr.String())
	}
}

// TestUDPFlood: 50 concurrent flows exchange 10,000 datagrams of mixed
// sizes up to 64 KiB, DNS-style (each waits for its answer), through a
// /udp forward and through an R:/udp reverse. Within a flow nothing is
// reordered; no datagram is merged, split or changed; nothing is lost.
func TestUDPFlood(t *testing.T) {
	t.Parallel()
	echo := startUDPEcho(t)
	rport := freeishPort(t)
	tun := startTunnel(t, nil, []string{"--reverse"}, nil, "127.0.0.1:0:"+echo+"/udp")
	client := startProc(t, "client-r", "", []string{"BURROW_AUTH=" + testUser + ":" + testPass},
		"client", "--fingerprint", tun.srv.cert.fingerprint, tun.srv.url, "R:127.0.0.1:"+rport+":"+echo+"/udp")
	client.waitLog(t, regexp.MustCompile(`msg="reverse listening on the server"`), startTimeout)
	for _, tc := range []struct{ name, addr string }{
		{"forward", tun.locals[0]},
		{"reverse", "127.0.0.1:" + rport},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const flows, perFlow = 50, 200
			sizes := []int{20, 512, 1400, 4096, 16384, 65000}
			errs := make(chan error, flows)
			start := time.Now()
			for f := range flows {
				go func() {
					errs <- udpFlow(tc.addr, f, perFlow, sizes)
				}()
			}
			for range flows {
				if err := <-errs; err != nil {
					t.Error(err)
				}
			}
			t.Logf("%d datagrams over %d flows in %v", flows*perFlow, flows, time.Since(start).Round(time.Millisecond))
		})
	}
}

// udpFlow sends n datagrams, each tagged with flow and sequence number,
// waiting for each answer, and checks every answer is the datagram sent.
func udpFlow(addr string, flow, n int, sizes []int) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	bigBuffers(c.(*net.UDPConn))
	buf := make([]byte, 65535)
	for seq := range n {
		msg := make([]byte, sizes[(flow+seq)%len(sizes)])
		rand.Read(msg)
		copy(msg, fmt.Sprintf("%04d%06d", flow, seq))
		if _, err := c.Write(msg); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("flow %d: datagram %d lost: %v", flow, seq, err)
		}
		if !bytes.Equal(buf[:k], msg) {
			return fmt.Errorf("flow %d: datagram %d (%d bytes) came back as %d bytes starting %q", flow, seq, len(msg), k, buf[:min(k, 10)])
		}
	}
	return nil
}

// bigBuffers gives a test's own UDP socket the room burrow's sockets ask
// for: with 50 flows of 64 KiB datagrams in flight, the kernel's default
// ~200 KiB would drop datagrams before any code of ours sees them.
func bigBuffers(c *net.UDPConn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		for _, opt := range []int{unix.SO_RCVBUFFORCE, unix.SO_SNDBUFFORCE} {
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, 4<<20)
		}
	})
}

// TestACLPerMode: a user whose allow list does not cover a mode's target
// is refused in that mode, with a message saying so, and the session
// stays up for what is allowed.
func TestACLPerMode(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	_, echoPort, _ := net.SplitHostPort(echo)
	udpEcho := startUDPEcho(t)
	// Allowed: TCP to the echo only. Not UDP, not other targets, no
	// reverse binds.
	srv := startTestServer(t, []string{regexp.QuoteMeta(echo)}, "--reverse")
	client := startProc(t, "client", "", []string{"BURROW_AUTH=" + testUser + ":" + testPass},
		"client", "--fingerprint", srv.cert.fingerprint, srv.url,
		"127.0.0.1:0:"+echo, "127.0.0.1:0:socks", "127.0.0.1:0:"+udpEcho+"/udp")
	lines := client.waitLogCount(t, forwardLine, 3, startTimeout)
	tcpLocal, socksLocal, udpLocal := lines[0][1], lines[1][1], lines[2][1]
	client.waitLog(t, connectedLine, startTimeout)
	notAllowed := regexp.MustCompile(`not allowed for user ` + testUser)

	t.Run("tcp allowed", func(t *testing.T) { echoRoundTrip(t, tcpLocal, []byte("allowed")) })
	t.Run("socks target", func(t *testing.T) {
		before := client.countLog(notAllowed)
		d, _ := proxy.SOCKS5("tcp", socksLocal, nil, &net.Dialer{Timeout: ioTimeout})
		if _, err := d.Dial("tcp", "localhost:"+echoPort); err == nil || !strings.Contains(err.Error(), "not allowed") {
			t.Fatalf("socks to a target outside the allow list: %v, want 'not allowed by ruleset'", err)
		}
		client.waitLogCount(t, notAllowed, before+1, ioTimeout)
	})
	t.Run("udp", func(t *testing.T) {
		before := client.countLog(notAllowed)
		c, err := net.Dial("udp", udpLocal)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("denied datagram"))
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(make([]byte, 64)); err == nil {
			t.Fatal("a datagram came back through a flow the allow list refuses")
		}
		client.waitLogCount(t, notAllowed, before+1, ioTimeout)
		srv.waitLog(t, regexp.MustCompile(`kind=udp .*not allowed`), ioTimeout)
	})
	t.Run("reverse bind", func(t *testing.T) {
		_, line := runFailing(t, []string{"BURROW_AUTH=" + testUser + ":" + testPass},
			"client", "--fingerprint", srv.cert.fingerprint, srv.url, "R:127.0.0.1:"+freeishPort(t)+":"+echo)
		if !strings.Contains(line, "not allowed") || !strings.Contains(line, "R:127.0.0.1:") {
			t.Errorf("reverse bind outside the allow list: %q", line)
		}
	})
	t.Run("reverse disabled", func(t *testing.T) {
		plain := startTestServer(t, nil)
		_, line := runFailing(t, []string{"BURROW_AUTH=" + testUser + ":" + testPass},
			"client", "--fingerprint", plain.cert.fingerprint, plain.url, "R:127.0.0.1:"+freeishPort(t)+":"+echo)
		if !strings.Contains(line, "--reverse") {
			t.Errorf("reverse remote on a server without --reverse: %q", line)
		}
	})
	t.Run("session survived", func(t *testing.T) { echoRoundTrip(t, tcpLocal, []byte("still up")) })
}

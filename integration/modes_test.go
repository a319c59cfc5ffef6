package integration

// The forwarding modes beyond a plain TCP forward, driven through the real
// binary with real clients where one exists: curl through socks and
// R:socks, stdin and stdout as one connection, a paced UDP flood through
// /udp and R:/udp, the reverse listener's life across a killed and a
// frozen client, the allow list in every mode, and the remote grammar's
// refusals. Real ssh and scp through stdio: and a forward are in
// ssh_test.go.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/burrowtun/burrow/integration/harness"
	"golang.org/x/sys/unix"
)

var (
	reverseListeningLine = regexp.MustCompile(`msg="reverse listening on the server" addr=(\S+)`)
	// reversePortInUse is the server's answer when another program holds
	// the port a reverse remote asks for: the caller picks another.
	reversePortInUse = regexp.MustCompile(`is in use by another program on the server`)
)

// startReverseClient starts 'burrow client' as auth (USER:PASSWORD), with
// flags and the remotes that remotes returns for port. A reverse remote
// needs a fixed port on the server, so the port is chosen at random and,
// when the server answers that another program holds it, another is
// tried. It waits until every forward is bound locally, every reverse
// remote listens on the server and the client is connected, and returns
// the client, the port and the forwards' local addresses in order.
func startReverseClient(t *testing.T, name string, srv *harness.Server, auth string, flags []string, remotes func(port int) []string) (*harness.Proc, int, []string) {
	t.Helper()
	for range 10 {
		port := randomConfigPort()
		specs := remotes(port)
		reverse := 0
		for _, r := range specs {
			if strings.HasPrefix(r, "R:") {
				reverse++
			}
		}
		args := append([]string{"client", "--fingerprint", srv.Cert.Fingerprint}, flags...)
		args = append(append(args, srv.URL), specs...)
		env := append(append([]string{}, clearProxyEnv...), "BURROW_AUTH="+auth)
		p := burrow.Start(t, name, "", env, args...)
		deadline := time.Now().Add(harness.StartTimeout)
		for {
			exited := p.Exited()
			log := p.Stderr.String()
			if reversePortInUse.MatchString(log) {
				t.Logf("port %d is taken on the server; trying another", port)
				p.Kill(t)
				break
			}
			fwd := harness.ForwardLine.FindAllStringSubmatch(log, -1)
			if len(fwd) >= len(specs)-reverse && len(reverseListeningLine.FindAllString(log, -1)) >= reverse &&
				harness.ConnectedLine.MatchString(log) {
				var locals []string
				for _, m := range fwd[:len(specs)-reverse] {
					locals = append(locals, m[1])
				}
				return p, port, locals
			}
			if exited {
				t.Fatalf("%s exited (code %d) before its reverse remotes listened:\n%s", name, p.ExitCode, log)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: reverse remotes not listening within %v:\n%s", name, harness.StartTimeout, log)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Fatal("no free port for a reverse remote after 10 tries")
	return nil, 0, nil
}

// startHTTPTarget serves body on 127.0.0.1:0 (httptest) and returns its
// port and the Host header of each request it answered.
func startHTTPTarget(t *testing.T, body string) (port string, hosts func() []string) {
	t.Helper()
	var (
		mu   sync.Mutex
		seen []string
	)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Host)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, body)
	}))
	t.Cleanup(hs.Close)
	_, port, _ = net.SplitHostPort(hs.Listener.Addr().String())
	return port, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

// curlResult is what a curl run printed and how it ended.
type curlResult struct {
	stdout, stderr string
	code           int // curl's exit code; -1 if killed
}

// runCurl runs curl with args (after -q, which ignores ~/.curlrc), with the
// proxy variables cleared, and kills it by PID if it outlives harness.IOTimeout.
func runCurl(t *testing.T, curl string, args ...string) curlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), harness.IOTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, curl, append([]string{"-q", "-sS", "--max-time", "10", "--noproxy", ""}, args...)...)
	cmd.Env = append(harness.CleanEnv(), clearProxyEnv...)
	cmd.WaitDelay = 2 * time.Second
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("curl %s: %v", strings.Join(args, " "), err)
	}
	return curlResult{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// wantSOCKSRefusal runs curl with args through a SOCKS proxy that must
// turn the request down, and checks that curl failed in the SOCKS
// handshake (exit 97, CURLE_PROXY), not by a timeout or a closed
// connection, saying what matches why (case-insensitive): for a SOCKS
// reply, curl prints its code, "(2)" for not allowed by ruleset.
func wantSOCKSRefusal(t *testing.T, curl, why string, args ...string) {
	t.Helper()
	res := runCurl(t, curl, args...)
	if res.code != 97 || !regexp.MustCompile(`(?i)`+why).MatchString(res.stderr) || res.stdout != "" {
		t.Fatalf("curl %s exited %d, stdout %q, stderr %q; want exit 97 (a SOCKS handshake error) saying %q",
			strings.Join(args, " "), res.code, res.stdout, res.stderr, why)
	}
	t.Logf("%s", strings.TrimSpace(res.stderr))
}

// TestSOCKSCurl drives a real curl through a local socks remote that
// requires --socks-auth, and through an R:socks remote from the server's
// side, which requires the same credentials. The URL names localhost, which curl passes on unresolved
// (--socks5-hostname): the log lines show the far side dialing the name.
func TestSOCKSCurl(t *testing.T) {
	t.Parallel()
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed (Debian package curl)")
	}
	page := fmt.Sprintf("page-%016x", rand.Uint64())
	httpPort, hosts := startHTTPTarget(t, page)
	url := "http://localhost:" + httpPort + "/"
	socksUser, socksPass := "sockuser", fmt.Sprintf("s3cret-%08x", rand.Uint32())

	srv := burrow.StartTestServer(t, nil, "--reverse")
	client, rport, locals := startReverseClient(t, "client", srv, harness.TestUser+":"+harness.TestPass,
		[]string{"--socks-auth", socksUser + ":" + socksPass},
		func(port int) []string {
			return []string{"127.0.0.1:0:socks", "R:127.0.0.1:" + strconv.Itoa(port) + ":socks"}
		})
	socksLocal, socksReverse := locals[0], "127.0.0.1:"+strconv.Itoa(rport)
	target := regexp.QuoteMeta("localhost:" + httpPort)

	t.Run("socks with the right password", func(t *testing.T) {
		res := runCurl(t, curl, "--socks5-hostname", socksUser+":"+socksPass+"@"+socksLocal, url)
		if res.code != 0 || res.stdout != page {
			t.Fatalf("curl exited %d, body %q, stderr %q; want body %q", res.code, res.stdout, res.stderr, page)
		}
		// The name went through unresolved and the server dialed it.
		client.WaitLog(t, regexp.MustCompile(`msg="stream opened" .*target=`+target+`\b`), harness.IOTimeout)
		srv.WaitLog(t, regexp.MustCompile(`msg="stream opened" .*kind=tcp target=`+target+`\b`), harness.IOTimeout)
	})

	// Refusals come back as SOCKS answers that curl reports, at once: not
	// as a closed connection, nor as a hang until --max-time.
	for _, tc := range []struct {
		name, proxy, url string
		curlSays         string         // curl's error, as a regexp
		logged           *regexp.Regexp // the client's line about it
	}{
		{"socks with a wrong password", socksUser + ":not-" + socksPass + "@" + socksLocal, url,
			`User was rejected by the SOCKS5 server`, regexp.MustCompile(`msg="socks request failed" .*wrong username or password`)},
		{"socks without credentials", socksLocal, url,
			`No authentication method was acceptable`, regexp.MustCompile(`msg="socks request failed" .*does not offer username/password`)},
		// SOCKS reply 5: connection refused.
		{"socks to a closed port", socksUser + ":" + socksPass + "@" + socksLocal, "http://127.0.0.1:1/",
			`SOCKS5 connection to 127\.0\.0\.1\. \(5\)`, regexp.MustCompile(`msg="forward refused" .*target=127\.0\.0\.1:1 .*connection refused by 127\.0\.0\.1:1`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := client.CountLog(tc.logged)
			wantSOCKSRefusal(t, curl, tc.curlSays, "--socks5-hostname", tc.proxy, tc.url)
			client.WaitLogCount(t, tc.logged, before+1, harness.IOTimeout)
		})
	}

	// The client's --socks-auth guards its R:socks listener on the server
	// too: without it any local user of the server could reach the
	// client's network.
	t.Run("R:socks without credentials", func(t *testing.T) {
		logged := regexp.MustCompile(`msg="reverse socks request failed" .*does not offer username/password`)
		before := srv.CountLog(logged)
		wantSOCKSRefusal(t, curl, `No authentication method was acceptable`, "--proxy", "socks5h://"+socksReverse, url)
		srv.WaitLogCount(t, logged, before+1, harness.IOTimeout)
	})

	t.Run("R:socks from the server side", func(t *testing.T) {
		res := runCurl(t, curl, "--proxy", "socks5h://"+socksUser+":"+socksPass+"@"+socksReverse, url)
		if res.code != 0 || res.stdout != page {
			t.Fatalf("curl through R:socks exited %d, body %q, stderr %q; want body %q", res.code, res.stdout, res.stderr, page)
		}
		// The connection left from the client, which dialed the name.
		client.WaitLog(t, regexp.MustCompile(`msg="reverse stream opened" .*kind=tcp target=`+target+`\b`), harness.IOTimeout)
	})

	for _, h := range hosts() {
		if h != "localhost:"+httpPort {
			t.Errorf("the HTTP target saw Host %q, want localhost:%s", h, httpPort)
		}
	}
	if n := len(hosts()); n != 2 {
		t.Errorf("the HTTP target answered %d requests, want 2 (one per allowed curl)", n)
	}
}

// TestStdio carries the client's stdin and stdout as one connection, as
// ssh's ProxyCommand uses a stdio: remote: the end of stdin reaches the
// target as EOF (a half-close) while its answer still comes back, and the
// client exits 0 by itself once the far end is done, even while its stdin
// stays open. Nothing but the connection's bytes is written to stdout.
func TestStdio(t *testing.T) {
	t.Parallel()
	srv := burrow.StartTestServer(t, nil)
	payload := make([]byte, 4<<20)
	var seed [32]byte
	binary.BigEndian.PutUint64(seed[:], rand.Uint64())
	rand.NewChaCha8(seed).Read(payload)
	// digest answers what it read, once it has read to EOF.
	digest := harness.StartTarget(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(harness.IOTimeout))
		sum := sha256.New()
		n, err := io.Copy(sum, c)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "%d bytes, sha256 %x\n", n, sum.Sum(nil))
		c.CloseWrite()
	})
	// greeter speaks first and hangs up without reading, as a server
	// that refuses a client does.
	const greeting = "SSH-2.0-greeter\r\nno more\r\n"
	greeter := harness.StartTarget(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(harness.IOTimeout))
		io.WriteString(c, greeting)
	})
	openStdin := func(t *testing.T) io.Reader {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close(); w.Close() }) // after the client is killed
		return r
	}

	tests := []struct {
		name     string
		target   string
		stdin    func(t *testing.T) io.Reader
		want     string // on stdout
		bytesOut int    // logged; -1 if not known
	}{
		{"stdin to EOF, then the answer", digest,
			func(*testing.T) io.Reader { return bytes.NewReader(payload) },
			fmt.Sprintf("%d bytes, sha256 %x\n", len(payload), sha256.Sum256(payload)), len(payload)},
		{"the far end hangs up first", greeter, openStdin, greeting, -1},
	}
	closed := regexp.MustCompile(`msg="stdio forward closed" .*bytes_out=(\d+) bytes_in=(\d+)`)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(burrow.Path(), "client", "--log-level", "info", "--fingerprint", srv.Cert.Fingerprint, srv.URL, "stdio:"+tc.target)
			cmd.Env = append(append(harness.CleanEnv(), clearProxyEnv...), "BURROW_AUTH="+harness.TestUser+":"+harness.TestPass)
			cmd.Stdin = tc.stdin(t)
			p := harness.StartCmd(t, "client-stdio", cmd, 0)
			start := time.Now()
			if code := p.WaitExit(t, harness.IOTimeout); code != 0 {
				t.Fatalf("stdio client exited with code %d, want 0", code)
			}
			t.Logf("stdio client exited 0 after %v", time.Since(start).Round(time.Millisecond))
			if got := p.Stdout.String(); got != tc.want {
				t.Errorf("stdout has %d bytes %.80q, want %d bytes %.80q", len(got), got, len(tc.want), tc.want)
			}
			m := p.WaitLog(t, closed, harness.ExitTimeout)
			if out, _ := strconv.Atoi(m[1]); tc.bytesOut >= 0 && out != tc.bytesOut {
				t.Errorf("logged bytes_out=%d, want %d", out, tc.bytesOut)
			}
			if in, _ := strconv.Atoi(m[2]); in != len(tc.want) {
				t.Errorf("logged bytes_in=%d, want %d", in, len(tc.want))
			}
		})
	}
}

// startDatagramEcho answers every datagram with itself from a UDP socket
// on 127.0.0.1:0, in the order received, and returns its address.
func startDatagramEcho(t *testing.T) *net.UDPAddr {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	growUDPBuf(c)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return c.LocalAddr().(*net.UDPAddr)
}

// growUDPBuf gives a test's UDP socket 16 MiB of kernel buffer each way:
// SetReadBuffer is capped by net.core.rmem_max, the FORCE options are not
// (for root, as the tests run in CI).
func growUDPBuf(c *net.UDPConn) {
	const size = 16 << 20
	c.SetReadBuffer(size)
	c.SetWriteBuffer(size)
	if rc, err := c.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size)
		})
	}
}

// The flood's datagrams carry a header: flow id, sequence number, total
// length and the CRC-32C of the rest, so that an answer that was merged,
// split, changed, sent to the wrong flow or reordered is recognised.
const floodHeader = 16

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// floodSizes are the datagram sizes, cycled with an offset per flow: both
// sides of the usual MTUs, jumbo frames, and the largest that fits the
// tunnel's 64 KiB frames with room for IPv4 and UDP headers.
var floodSizes = []int{floodHeader, 17, 100, 512, 1200, 1472, 1473, 4000, 8192, 9000, 16384, 32768, 65000}

// floodResult is what one flow saw.
type floodResult struct {
	sent     int      // datagrams sent
	answered int      // came back whole, in order, to the flow that sent them
	late     int      // came back after a later one: reordered or duplicated
	damaged  int      // came back merged, split, changed or to another flow
	bytes    int64    // of the answered datagrams
	problems []string // the first few late, damaged or unsent datagrams
}

func (r *floodResult) problem(flow int, format string, args ...any) {
	if len(r.problems) < 3 {
		r.problems = append(r.problems, fmt.Sprintf("flow %d: ", flow)+fmt.Sprintf(format, args...))
	}
}

// lost is how many datagrams sent never came back in any form.
func (r *floodResult) lost() int { return max(0, r.sent-r.answered-r.late-r.damaged) }

// floodFlow sends n datagrams from c (connected to the tunnel's UDP
// port), keeping at most window unanswered, and checks each answer. The
// pacing keeps every queue on the path far below its bound, so no
// datagram should be lost. It gives up when nothing comes back for
// silence. It does not close c.
func floodFlow(c *net.UDPConn, flow, n, window int, silence time.Duration) floodResult {
	credits := make(chan struct{}, window)
	for range window {
		credits <- struct{}{}
	}
	credit := func(k int) {
		for range k {
			select {
			case credits <- struct{}{}:
			default:
			}
		}
	}
	var rx floodResult // owned by the receiver until recvDone
	recvDone := make(chan struct{})
	go func() { // the answers, in the order they come
		defer close(recvDone)
		buf := make([]byte, 65535)
		last := -1
		for last < n-1 && rx.answered+rx.late+rx.damaged < n {
			c.SetReadDeadline(time.Now().Add(silence))
			k, err := c.Read(buf)
			if err != nil {
				return // silence: what is missing is lost
			}
			if k < floodHeader {
				rx.damaged++
				rx.problem(flow, "a %d-byte answer, shorter than any datagram sent (split?)", k)
				credit(1)
				continue
			}
			gotFlow := int(binary.BigEndian.Uint32(buf[0:]))
			seq := int(int32(binary.BigEndian.Uint32(buf[4:])))
			length := int(binary.BigEndian.Uint32(buf[8:]))
			sum := binary.BigEndian.Uint32(buf[12:])
			bad := ""
			switch {
			case length != k:
				bad = fmt.Sprintf("datagram %d came back as %d bytes, sent as %d (merged or split)", seq, k, length)
			case crc32.Checksum(buf[floodHeader:k], castagnoli) != sum:
				bad = fmt.Sprintf("datagram %d (%d bytes) came back changed", seq, k)
			case gotFlow != flow:
				bad = fmt.Sprintf("received datagram %d of flow %d (sent from another socket)", seq, gotFlow)
			}
			switch {
			case bad != "":
				rx.damaged++
				rx.problem(flow, "%s", bad)
				credit(1)
			case seq <= last:
				rx.late++
				rx.problem(flow, "datagram %d came back after datagram %d (reordered or duplicated)", seq, last)
			default:
				// Datagrams skipped over are lost (or late): their
				// credits come back with this one's.
				credit(seq - last)
				last = seq
				rx.answered++
				rx.bytes += int64(k)
			}
		}
	}()

	var tx floodResult
	payload := make([]byte, 65535+1024)
	rng := rand.New(rand.NewPCG(uint64(flow), 0x5eed))
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
sending:
	for seq := range n {
		select {
		case <-credits:
		case <-recvDone:
			break sending
		}
		size := floodSizes[(flow+seq)%len(floodSizes)]
		off := (seq * 61) % 1024
		msg := payload[off : off+size]
		binary.BigEndian.PutUint32(msg[0:], uint32(flow))
		binary.BigEndian.PutUint32(msg[4:], uint32(seq))
		binary.BigEndian.PutUint32(msg[8:], uint32(size))
		binary.BigEndian.PutUint32(msg[12:], crc32.Checksum(msg[floodHeader:], castagnoli))
		if _, err := c.Write(msg); err != nil {
			tx.problem(flow, "sending datagram %d: %v", seq, err)
			break
		}
		tx.sent++
	}
	<-recvDone
	rx.sent = tx.sent
	rx.problems = append(tx.problems, rx.problems...)
	return rx
}

// kernelUDPDrops sums the drop counters that /proc/net/udp shows for the
// IPv4 sockets whose local or remote port is one of ports: datagrams the
// kernel discarded because a socket's buffer was full, which no program
// counts.
func kernelUDPDrops(ports ...int) (int, error) {
	f, err := os.Open("/proc/net/udp")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	want := map[int]bool{}
	for _, p := range ports {
		want[p] = true
	}
	port := func(hexAddr string) int {
		_, h, _ := strings.Cut(hexAddr, ":")
		p, _ := strconv.ParseUint(h, 16, 16)
		return int(p)
	}
	total := 0
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 13 || !(want[port(fields[1])] || want[port(fields[2])]) {
			continue
		}
		d, _ := strconv.Atoi(fields[len(fields)-1])
		total += d
	}
	return total, sc.Err()
}

var droppedField = regexp.MustCompile(`\bdropped=(\d+)`)

// countedDrops sums the dropped= fields that procs have logged.
func countedDrops(procs ...*harness.Proc) int {
	total := 0
	for _, p := range procs {
		for _, m := range droppedField.FindAllStringSubmatch(p.Stderr.String(), -1) {
			n, _ := strconv.Atoi(m[1])
			total += n
		}
	}
	return total
}

// TestUDPFloodPaced: 50 concurrent flows (50 sockets) exchange 10,000
// datagrams of mixed sizes up to 65,000 bytes with an echo, through a /udp
// forward and through an R:/udp reverse. Each flow keeps a few datagrams
// in flight, so within a flow reordering would show. Every answer must be
// the datagram sent, whole (neither merged nor split), in order; a lost
// datagram must be covered by a drop burrow counted and logged; and since
// the senders are paced far below any queue's bound, nothing may be lost.
// When the flows have gone idle, each end's log must show one stream per
// flow that carried all of that flow's datagrams.
func TestUDPFloodPaced(t *testing.T) {
	t.Parallel()
	const (
		flows   = 50
		perFlow = 200 // 10,000 datagrams in all
		window  = 4   // unanswered datagrams per flow
		silence = 5 * time.Second
		idle    = "2s" // --udp-idle: flows end soon after the flood, and log
	)
	echo := startDatagramEcho(t)
	srv := burrow.StartTestServer(t, nil, "--reverse", "--udp-idle", idle)
	client, rport, locals := startReverseClient(t, "client", srv, harness.TestUser+":"+harness.TestPass,
		[]string{"--udp-idle", idle},
		func(port int) []string {
			return []string{"127.0.0.1:0:" + echo.String() + "/udp", "R:127.0.0.1:" + strconv.Itoa(port) + ":" + echo.String() + "/udp"}
		})
	target := regexp.QuoteMeta(echo.String())

	tests := []struct {
		name string
		addr string
		// closed matches the log line of the end that dialed the echo,
		// one per flow, once the flow is idle.
		closed *regexp.Regexp
		logger *harness.Proc
	}{
		{"forward", locals[0],
			regexp.MustCompile(`msg="udp flow closed" .*kind=udp target=` + target + ` datagrams_out=(\d+) datagrams_in=(\d+) dropped=(\d+)`),
			srv.Proc},
		{"reverse", "127.0.0.1:" + strconv.Itoa(rport),
			regexp.MustCompile(`msg="reverse udp flow closed" .*kind=reverse-udp .*remote=` + target + ` datagrams_out=(\d+) datagrams_in=(\d+) dropped=(\d+)`),
			client},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raddr, err := net.ResolveUDPAddr("udp", tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			conns := make([]*net.UDPConn, flows)
			for i := range conns {
				if conns[i], err = net.DialUDP("udp", nil, raddr); err != nil {
					t.Fatal(err)
				}
				defer conns[i].Close()
				growUDPBuf(conns[i])
			}
			dropsBefore := countedDrops(srv.Proc, client)
			results := make(chan floodResult, flows)
			start := time.Now()
			for f, c := range conns {
				go func() { results <- floodFlow(c, f, perFlow, window, silence) }()
			}
			var sent, answered, broken, lost int
			var bytes int64
			var shown []string // the first few problems
			for range flows {
				r := <-results
				sent += r.sent
				answered += r.answered
				broken += r.late + r.damaged
				lost += r.lost()
				bytes += r.bytes
				for _, p := range r.problems {
					if len(shown) < 10 {
						shown = append(shown, p)
					}
				}
			}
			elapsed := time.Since(start)
			// Before the flows' sockets close: the kernel's own drops on
			// the path, for the record if anything was lost.
			kernel, kerr := kernelUDPDrops(echo.Port, raddr.Port)
			t.Logf("%d flows: %d datagrams sent, %d answered whole and in order (%.1f MiB each way) in %v",
				flows, sent, answered, float64(bytes)/(1<<20), elapsed.Round(time.Millisecond))
			if broken > 0 || len(shown) > 0 {
				t.Errorf("%d answers were merged, split, changed, misdelivered or reordered; the first problems:\n%s",
					broken, strings.Join(shown, "\n"))
			}
			if sent != flows*perFlow {
				t.Errorf("sent %d datagrams, want %d: a flow stalled (no answer for %v)", sent, flows*perFlow, silence)
			}

			// Once the flows are idle (--udp-idle), each logs its counts,
			// drops included.
			for deadline := time.Now().Add(10 * time.Second); tc.logger.CountLog(tc.closed) < flows && time.Now().Before(deadline); {
				time.Sleep(50 * time.Millisecond)
			}
			lines := tc.closed.FindAllStringSubmatch(tc.logger.Stderr.String(), -1)
			if lost > 0 {
				counted := countedDrops(srv.Proc, client) - dropsBefore
				t.Errorf("%d of %d datagrams lost; burrow's logs count %d dropped; the kernel counts %d dropped on the path's sockets (%v)",
					lost, sent, counted, kernel, kerr)
				if counted < lost {
					t.Errorf("%d lost datagrams are not accounted for by burrow's drop counts", lost-counted)
				}
			}
			// One stream per flow, each with all of its flow's datagrams.
			wrong := 0
			for _, m := range lines {
				out, _ := strconv.Atoi(m[1])
				in, _ := strconv.Atoi(m[2])
				dropped, _ := strconv.Atoi(m[3])
				if out == perFlow && in == perFlow && dropped == 0 {
					continue
				}
				if wrong++; wrong <= 5 {
					t.Errorf("%s logged a flow with datagrams_out=%d datagrams_in=%d dropped=%d, want %d, %d, 0",
						tc.logger.Name, out, in, dropped, perFlow, perFlow)
				}
			}
			if wrong > 0 {
				t.Errorf("%d of %d flows did not carry exactly their %d datagrams each way", wrong, flows, perFlow)
			}
			if len(lines) != flows {
				t.Errorf("%s logged %d UDP flows closed, want %d (one stream per source socket)", tc.logger.Name, len(lines), flows)
			}

			// Last, as its flow is not one of those counted above: the
			// datagrams too short to carry the flood's header.
			shortRoundTrips(t, tc.addr)
		})
	}
}

// shortRoundTrips sends a datagram of every size below the flood's
// header, down to one byte, to an echo through addr, one at a time from a
// socket of its own, and checks that each comes back alone and unchanged.
func shortRoundTrips(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 65535)
	for size := floodHeader - 1; size >= 1; size-- {
		msg := []byte(fmt.Sprintf("%0*d", size, size))
		if _, err := c.Write(msg); err != nil {
			t.Fatalf("sending a %d-byte datagram: %v", size, err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("a %d-byte datagram did not come back: %v", size, err)
		}
		if string(buf[:n]) != string(msg) {
			t.Fatalf("a %d-byte datagram %q came back as %d bytes %q", size, msg, n, buf[:n])
		}
	}
}

// waitPortFree polls until nothing listens on addr (a listener of our own
// can be bound there, and is closed again at once), and returns how long
// it took; it fails the test after timeout.
func waitPortFree(t *testing.T, addr string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		l, err := net.Listen("tcp", addr)
		if err == nil {
			l.Close()
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s still taken %v after its client went away: %v", addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReverseRelease follows a reverse listener's life on a server with
// --keepalive 1s: released when its client is killed, and when its client
// freezes (no FIN: only keepalives notice), bound again by a new or
// resumed client without anyone touching the server; and refused to
// another user while held, naming the holder.
func TestReverseRelease(t *testing.T) {
	t.Parallel()
	const releaseTimeout = 5 * time.Second // keepalive 1s: a dead peer is noticed in about 2s
	echo := harness.StartEcho(t)
	cert := burrow.NewCert(t, "localhost", "127.0.0.1")
	authfile := filepath.Join(t.TempDir(), "users.json")
	burrow.NewUser(t, authfile, harness.TestUser, harness.TestPass)
	burrow.NewUser(t, authfile, "bob", "bob-pass")
	srv := burrow.StartServer(t, cert, authfile, "--reverse", "--keepalive", "1s")
	tuning := []string{"--keepalive", "1s", "--max-retry-interval", "1s"}

	first, port, _ := startReverseClient(t, "client-1", srv, harness.TestUser+":"+harness.TestPass, tuning,
		func(port int) []string { return []string{"R:127.0.0.1:" + strconv.Itoa(port) + ":" + echo} })
	addr := "127.0.0.1:" + strconv.Itoa(port)
	remote := "R:" + addr + ":" + echo
	harness.EchoRoundTrip(t, addr, []byte("through the reverse port"))
	closedLine := regexp.MustCompile(`msg="reverse listener closed" .*addr=` + regexp.QuoteMeta(addr))

	t.Log("SIGKILL the client")
	first.Kill(t)
	took := waitPortFree(t, addr, releaseTimeout)
	t.Logf("reverse port free %v after SIGKILL", took.Round(time.Millisecond))
	srv.WaitLog(t, closedLine, harness.IOTimeout)
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s accepted a connection after its client was killed", addr)
	}

	second := burrow.Start(t, "client-2", "", append(append([]string{}, clearProxyEnv...), "BURROW_AUTH="+harness.TestUser+":"+harness.TestPass),
		append(append([]string{"client", "--fingerprint", cert.Fingerprint}, tuning...), srv.URL, remote)...)
	second.WaitLog(t, reverseListeningLine, harness.StartTimeout)
	harness.EchoRoundTrip(t, addr, []byte("through the reverse port, after a restart"))

	t.Run("another user asks for the held port", func(t *testing.T) {
		_, line := runFailing(t, []string{"BURROW_AUTH=bob:bob-pass"},
			"client", "--fingerprint", cert.Fingerprint, srv.URL, "R:"+addr+":"+echo)
		wantWords(t, line, "refused", addr, "already taken", "user "+harness.TestUser)
		harness.EchoRoundTrip(t, addr, []byte("still alice's"))
	})

	t.Run("frozen client", func(t *testing.T) {
		second.Signal(t, syscall.SIGSTOP)
		t.Cleanup(func() { syscall.Kill(second.Cmd.Process.Pid, syscall.SIGCONT) })
		took := waitPortFree(t, addr, releaseTimeout)
		t.Logf("reverse port free %v after the client froze", took.Round(time.Millisecond))
		srv.WaitLogCount(t, closedLine, 2, harness.IOTimeout)

		// Resumed, the client finds its session gone, reconnects and
		// binds the port again by itself.
		second.Signal(t, syscall.SIGCONT)
		second.WaitLogCount(t, reverseListeningLine, 2, 30*time.Second)
		harness.EchoRoundTrip(t, addr, []byte("through the reverse port, after a freeze"))
	})
}

// TestACLEveryMode: a user whose allow list covers one TCP target (by
// address), a UDP target only without /udp, and one reverse TCP bind is
// refused in every other mode, each time with a message that says the
// allow list did it, and the session stays up for what is allowed.
func TestACLEveryMode(t *testing.T) {
	t.Parallel()
	page := fmt.Sprintf("allowed-%016x", rand.Uint64())
	httpPort, _ := startHTTPTarget(t, page)
	allowed := "127.0.0.1:" + httpPort
	denied := harness.StartEcho(t)
	udpEcho := startDatagramEcho(t).String()
	// No reverse remote below is allowed, so none of these is ever bound.
	rport, other := strconv.Itoa(randomConfigPort()), strconv.Itoa(randomConfigPort())
	for other == rport {
		other = strconv.Itoa(randomConfigPort())
	}
	allow := []string{
		regexp.QuoteMeta(allowed),                // TCP and SOCKS, to this host:port as written
		regexp.QuoteMeta(udpEcho),                // no /udp: not a UDP target
		regexp.QuoteMeta("R:127.0.0.1:" + rport), // a reverse TCP bind; no /udp
	}
	srv := burrow.StartTestServer(t, allow, "--reverse")
	client, locals := burrow.StartClient(t, srv.URL, harness.TestUser+":"+harness.TestPass, []string{"--fingerprint", srv.Cert.Fingerprint},
		"127.0.0.1:0:"+allowed, "127.0.0.1:0:"+denied, "127.0.0.1:0:socks", "127.0.0.1:0:"+udpEcho+"/udp")
	allowedLocal, deniedLocal, socksLocal, udpLocal := locals[0], locals[1], locals[2], locals[3]
	notAllowed := func(target string) string {
		return regexp.QuoteMeta(target) + ` is not allowed for user ` + harness.TestUser
	}
	get := func(t *testing.T) {
		t.Helper()
		c := &http.Client{Timeout: harness.IOTimeout, Transport: &http.Transport{Proxy: nil}}
		resp, err := c.Get("http://" + allowedLocal + "/")
		if err != nil {
			t.Fatalf("GET through the allowed forward: %v", err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || string(body) != page {
			t.Fatalf("GET through the allowed forward: %q, %v; want %q", body, err, page)
		}
	}

	t.Run("tcp forward allowed", get)

	t.Run("tcp forward", func(t *testing.T) {
		expectResetWithoutData(t, deniedLocal)
		client.WaitLog(t, regexp.MustCompile(`msg="forward refused" .*remote=`+regexp.QuoteMeta(denied)+` .*`+notAllowed(denied)), harness.IOTimeout)
		srv.WaitLog(t, regexp.MustCompile(`msg="stream refused" .*kind=tcp target=`+regexp.QuoteMeta(denied)+` .*`+notAllowed(denied)), harness.IOTimeout)
	})

	t.Run("socks target", func(t *testing.T) {
		curl, err := exec.LookPath("curl")
		if err != nil {
			t.Skip("curl is not installed (Debian package curl)")
		}
		// The allow list matches the target as the SOCKS client names
		// it: 127.0.0.1:PORT is allowed, localhost:PORT is not.
		res := runCurl(t, curl, "--socks5-hostname", socksLocal, "http://"+allowed+"/")
		if res.code != 0 || res.stdout != page {
			t.Fatalf("curl to an allowed target through socks exited %d, body %q, stderr %q", res.code, res.stdout, res.stderr)
		}
		named := "localhost:" + httpPort
		// SOCKS reply 2: connection not allowed by ruleset.
		wantSOCKSRefusal(t, curl, `SOCKS5 connection to localhost\. \(2\)`, "--socks5-hostname", socksLocal, "http://"+named+"/")
		client.WaitLog(t, regexp.MustCompile(`msg="forward refused" .*target=`+regexp.QuoteMeta(named)+` .*`+notAllowed(named)), harness.IOTimeout)
	})

	t.Run("udp forward", func(t *testing.T) {
		c, err := net.Dial("udp", udpLocal)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("a datagram the allow list refuses")); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := c.Read(make([]byte, 64)); err == nil {
			t.Fatalf("%d bytes came back through a UDP flow the allow list refuses", n)
		}
		client.WaitLog(t, regexp.MustCompile(`msg="udp flow refused" .*`+notAllowed(udpEcho+"/udp")), harness.IOTimeout)
		srv.WaitLog(t, regexp.MustCompile(`msg="stream refused" .*kind=udp target=`+regexp.QuoteMeta(udpEcho)+` .*`+notAllowed(udpEcho+"/udp")), harness.IOTimeout)
	})

	t.Run("stdio", func(t *testing.T) {
		_, line := runFailing(t, []string{"BURROW_AUTH=" + harness.TestUser + ":" + harness.TestPass},
			"client", "--fingerprint", srv.Cert.Fingerprint, srv.URL, "stdio:"+denied)
		wantWords(t, line, notAllowedText(denied))
	})

	t.Run("reverse binds", func(t *testing.T) {
		for _, tc := range []struct{ remote, acl string }{
			{"R:127.0.0.1:" + other + ":" + denied, "R:127.0.0.1:" + other},
			{"R:127.0.0.1:" + other + ":socks", "R:127.0.0.1:" + other + "/socks"},
			{"R:127.0.0.1:" + rport + ":" + udpEcho + "/udp", "R:127.0.0.1:" + rport + "/udp"}, // R:…:rport is allowed, but for TCP
		} {
			t.Run(tc.remote, func(t *testing.T) {
				_, line := runFailing(t, []string{"BURROW_AUTH=" + harness.TestUser + ":" + harness.TestPass},
					"client", "--fingerprint", srv.Cert.Fingerprint, srv.URL, tc.remote)
				wantWords(t, line, "refused", notAllowedText(tc.acl))
			})
		}
	})

	t.Run("reverse disabled", func(t *testing.T) {
		plain := burrow.StartTestServer(t, nil) // any target, but no --reverse
		for _, remote := range []string{
			"R:127.0.0.1:" + other + ":" + denied,
			"R:127.0.0.1:" + other + ":socks",
			"R:127.0.0.1:" + other + ":" + udpEcho + "/udp",
		} {
			t.Run(remote, func(t *testing.T) {
				_, line := runFailing(t, []string{"BURROW_AUTH=" + harness.TestUser + ":" + harness.TestPass},
					"client", "--fingerprint", plain.Cert.Fingerprint, plain.URL, remote)
				wantWords(t, line, "reverse remotes are disabled", "--reverse")
			})
		}
	})

	t.Run("session survived", func(t *testing.T) {
		get(t)
		// Other clients of the same user came and went; this one kept
		// its first session throughout.
		if n := client.CountLog(harness.ConnectedLine); n != 1 {
			t.Errorf("client connected %d times, want once", n)
		}
		if client.CountLog(lostSessionLine) != 0 || client.Exited() {
			t.Error("client lost its session")
		}
	})
}

// notAllowedText is how the server words an allow-list refusal.
func notAllowedText(target string) string {
	return target + " is not allowed for user " + harness.TestUser
}

// TestRemoteGrammarErrors: remotes the grammar rejects make the client
// exit non-zero with the parser's message, naming the remote and its
// position, before it binds or connects anything.
func TestRemoteGrammarErrors(t *testing.T) {
	t.Parallel()
	// A stand-in for the server: any client that got as far as
	// connecting would show up here.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-acceptDone
	})
	url := "wss://" + ln.Addr().String()
	fingerprint := strings.Repeat("ab", 32) // well formed; never checked
	const good = "127.0.0.1:0:127.0.0.1:1"

	tests := []struct {
		name    string
		remotes []string
		words   []string // the message must mention each
	}{
		{"reverse stdio", []string{good, "R:stdio:127.0.0.1:22"},
			[]string{`remote #2 "R:stdio:127.0.0.1:22"`, "stdio cannot be reversed"}},
		{"socks over udp", []string{"socks/udp"},
			[]string{`remote #1 "socks/udp"`, "socks does not support udp"}},
		{"reverse socks over udp", []string{"R:5000:socks/udp"},
			[]string{`"R:5000:socks/udp"`, "socks does not support udp"}},
		{"two stdio remotes", []string{"stdio:127.0.0.1:22", good, "stdio:127.0.0.1:23"},
			[]string{`remote #3 "stdio:127.0.0.1:23"`, "only one stdio remote", `remote #1 "stdio:127.0.0.1:22"`}},
		{"mixed protocols", []string{"3000/udp:example.com:80/tcp"},
			[]string{`"3000/udp:example.com:80/tcp"`, "cross-protocol", "local port is udp but remote port is tcp"}},
		{"stdio over udp", []string{"stdio:127.0.0.1:53/udp"},
			[]string{`"stdio:127.0.0.1:53/udp"`, "stdio does not support udp"}},
		{"reverse port 0", []string{"R:0:127.0.0.1:80"},
			[]string{`"R:0:127.0.0.1:80"`, "local port 0", "reverse remote"}},
		{"same listener twice", []string{"127.0.0.1:3000:a.example:1", "3000:b.example:2"},
			[]string{`remote #2 "3000:b.example:2"`, "already listens on 127.0.0.1:3000/tcp", `remote #1`}},
		{"unknown protocol", []string{"3000:example.com:80/sctp"},
			[]string{`unknown protocol "sctp"`}},
		{"IPv6 without brackets", []string{"::1:2222:example.com:22"},
			[]string{"brackets"}},
		{"port out of range", []string{"3000:example.com:65536"},
			[]string{`remote port "65536"`, "1-65535"}},
	}
	// Sequential: each case is a process that exits in milliseconds.
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"client", "--fingerprint", fingerprint, url}, tc.remotes...)
			p, line := runFailing(t, []string{"BURROW_AUTH=" + harness.TestUser + ":" + harness.TestPass}, args...)
			wantWords(t, line, tc.words...)
			if logs, _ := harness.StderrLines(p); len(logs) != 0 {
				t.Errorf("the client logged before giving up (it should not get as far as binding or connecting): %q", logs)
			}
		})
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("%d connections reached the server address; a rejected remote must stop the client before it connects", n)
	}
}

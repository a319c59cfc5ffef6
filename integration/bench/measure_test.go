//go:build bench

package bench

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/burrowtun/burrow/certs"
	"github.com/burrowtun/burrow/client"
	"github.com/burrowtun/burrow/integration/harness"
	"golang.org/x/sys/unix"
)

// ---- iperf3 ----

// runIperf runs one iperf3 client against host:port (in ns, if set) for
// secs seconds after omitting the first omit, and returns what the
// receiver counted. A server still busy with the previous test is retried.
func runIperf(ns, host string, port, streams int, reverse bool, secs, omit int) (iperfResult, error) {
	argv := iperfArgs(host, port, streams, reverse, secs, omit)
	if ns != "" {
		argv = append([]string{ipTool(), "netns", "exec", ns}, argv...)
	}
	for attempt := 0; ; attempt++ {
		out, err := runTimeout(time.Duration(secs+omit+30)*time.Second, nil, "", argv...)
		var j iperfJSON
		if jerr := json.Unmarshal(out, &j); jerr != nil {
			if err == nil {
				err = fmt.Errorf("iperf3 output is not JSON: %w", jerr)
			}
			return iperfResult{}, err
		}
		if j.Error != "" {
			// The server is still ending the previous test, or between
			// tests has closed its listener to open it again.
			if (strings.Contains(j.Error, "busy") || strings.Contains(j.Error, "unable to connect")) && attempt < 10 {
				time.Sleep(300 * time.Millisecond)
				continue
			}
			return iperfResult{}, fmt.Errorf("%s: %s", strings.Join(argv, " "), j.Error)
		}
		if err != nil {
			return iperfResult{}, err
		}
		r := iperfResult{bps: j.End.SumReceived.BitsPerSecond, bytes: j.End.SumReceived.Bytes}
		for _, s := range j.End.Streams {
			r.streams = append(r.streams, s.Receiver.BitsPerSecond)
		}
		if r.bps <= 0 || len(r.streams) != streams {
			return r, fmt.Errorf("%s: %v bit/s over %d streams, want %d streams", strings.Join(argv, " "), r.bps, len(r.streams), streams)
		}
		return r, nil
	}
}

func iperfArgs(host string, port, streams int, reverse bool, secs, omit int) []string {
	argv := []string{"iperf3", "-c", host, "-p", strconv.Itoa(port), "-t", strconv.Itoa(secs), "-P", strconv.Itoa(streams), "-J"}
	if omit > 0 {
		argv = append(argv, "-O", strconv.Itoa(omit))
	}
	if reverse {
		argv = append(argv, "-R")
	}
	return argv
}

// ---- latency ----

const probeSize = 64

// rttOn makes n round trips of 64 bytes on c, a connection to an echo
// target, and returns their durations.
func rttOn(c net.Conn, n int) ([]time.Duration, error) {
	msg, buf := make([]byte, probeSize), make([]byte, probeSize)
	out := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return nil, err
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}

// measureRTTUntil makes 64-byte round trips on one connection to the echo
// target behind addr until deadline, at most
// max round trips.
func measureRTTUntil(addr string, deadline time.Time, max int) ([]time.Duration, error) {
	c, err := net.DialTimeout("tcp", addr, harness.IOTimeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(deadline.Add(harness.IOTimeout))
	msg, buf := make([]byte, probeSize), make([]byte, probeSize)
	var out []time.Duration
	for len(out) < max && time.Now().Before(deadline) {
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			return out, err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return out, err
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}

// measureConnect times n times: connect to addr, one 64-byte round trip
// to the echo target behind it, close.
func measureConnect(addr string, n int) ([]time.Duration, error) {
	msg, buf := make([]byte, probeSize), make([]byte, probeSize)
	out := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		c, err := net.DialTimeout("tcp", addr, harness.IOTimeout)
		if err != nil {
			return nil, err
		}
		c.SetDeadline(time.Now().Add(harness.IOTimeout))
		_, err = c.Write(msg)
		if err == nil {
			_, err = io.ReadFull(c, buf)
		}
		c.Close()
		if err != nil {
			return nil, err
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}

// percentile returns the p-th percentile (0 < p <= 100) of d, nearest rank.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// ---- Go benchmark loop ----

// throughputLoop sends b.N MiB on one connection to a sink behind addr,
// half-closes, and waits for the sink's count: the time covers delivery,
// not just handing bytes to the kernel.
func throughputLoop(b *testing.B, addr string) {
	const chunk = 1 << 20
	b.SetBytes(chunk)
	buf := make([]byte, chunk)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	c, err := net.DialTimeout("tcp", addr, harness.IOTimeout)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Minute))
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		b.Fatal(err)
	}
	var count [8]byte
	if _, err := io.ReadFull(c, count[:]); err != nil {
		b.Fatalf("sink's count: %v", err)
	}
	b.StopTimer()
	if got := binary.BigEndian.Uint64(count[:]); got != uint64(b.N)*chunk {
		b.Fatalf("sink received %d bytes, want %d", got, uint64(b.N)*chunk)
	}
}

// ---- idle streams and sessions ----

// openIdle opens n connections to addr, a forward to the hold helper, each
// confirmed by a one-byte round trip, workers at a time.
func openIdle(addr string, n, workers int) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	idx := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var once sync.Once
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			one := []byte{1}
			for i := range idx {
				c, err := net.DialTimeout("tcp", addr, harness.IOTimeout)
				if err == nil {
					c.SetDeadline(time.Now().Add(harness.IOTimeout))
					if _, err = c.Write(one); err == nil {
						_, err = io.ReadFull(c, one)
					}
					c.SetDeadline(time.Time{})
					if err != nil {
						c.Close()
					}
				}
				if err != nil {
					errs <- fmt.Errorf("idle connection %d: %w", i, err)
					once.Do(func() { close(stop) })
					return
				}
				conns[i] = c
			}
		}()
	}
feed:
	for i := range n {
		select {
		case idx <- i:
		case <-stop:
			break feed
		}
	}
	close(idx)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		closeAll(conns)
		return nil, err
	}
	return conns, nil
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// openSessions opens n sessions to srv in this process, with the client
// package the binary uses, workers at a time.
func openSessions(ctx context.Context, srv *benchServer, n, workers int) ([]*client.Session, error) {
	tlsConfig, err := certs.ClientConfig(certs.ClientOptions{Fingerprint: srv.creds.fingerprint})
	if err != nil {
		return nil, err
	}
	cfg := client.Config{URL: srv.url(), Username: benchUser, Password: benchPass, TLS: tlsConfig, DialTimeout: harness.IOTimeout}
	sessions := make([]*client.Session, n)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	idx := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				s, err := client.Connect(ctx, cfg)
				mu.Lock()
				if err != nil && first == nil {
					first = fmt.Errorf("session %d: %w", i, err)
				}
				sessions[i] = s
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed {
			break
		}
		idx <- i
	}
	close(idx)
	wg.Wait()
	if first != nil {
		closeSessions(sessions)
		return nil, first
	}
	return sessions, nil
}

func closeSessions(sessions []*client.Session) {
	for _, s := range sessions {
		if s != nil {
			s.Close()
		}
	}
}

// settleRSS waits for a process's RSS to stop moving (GC, the pipes'
// 200 ms buffer release), at most a few seconds, and returns it in KiB.
func settleRSS(pid int) int64 {
	last, _ := procStatusKiB(pid, "VmRSS")
	for range 10 {
		time.Sleep(500 * time.Millisecond)
		now, _ := procStatusKiB(pid, "VmRSS")
		if d := now - last; d > -64 && d < 64 {
			return now
		}
		last = now
	}
	return last
}

// ---- the simulated long link ----

// linkSpec is a simulated long link: a one-way delay each way and a rate.
type linkSpec struct {
	oneWay time.Duration
	rate   float64 // bytes per second
	queue  int     // bytes a direction may queue beyond what is in flight
}

// startDelayProxy relays connections to target through l: each direction
// is serialized at l.rate and delivered l.oneWay later, with at most
// rate*oneWay+queue bytes held, so a sender is held back by the proxy as by
// a link with a bounded buffer.
func startDelayProxy(tb testing.TB, target string, l linkSpec) string {
	closing := make(chan struct{})
	addr := harness.StartTarget(tb, func(c *net.TCPConn) {
		up, err := net.DialTimeout("tcp", target, harness.IOTimeout)
		if err != nil {
			return
		}
		defer up.Close()
		finished := make(chan struct{})
		defer close(finished)
		go func() { // ends both directions when the test ends
			select {
			case <-closing:
				c.Close()
				up.Close()
			case <-finished:
			}
		}()
		done := make(chan struct{})
		go func() {
			defer close(done)
			l.carry(up.(*net.TCPConn), c)
		}()
		l.carry(c, up.(*net.TCPConn))
		<-done
	})
	tb.Cleanup(func() { close(closing) }) // runs before harness.StartTarget's, which waits for the handlers
	return addr
}

var chunkPool = sync.Pool{New: func() any { return new([64 << 10]byte) }}

// carry moves src to dst through the simulated link until EOF or an error.
func (l linkSpec) carry(dst, src *net.TCPConn) {
	type chunk struct {
		buf *[64 << 10]byte
		n   int
		at  time.Time
	}
	budget := newByteBudget(int(l.rate*l.oneWay.Seconds()) + l.queue + 64<<10)
	q := make(chan chunk, 4096)
	go func() { // owned by the range below, which ends only when q is closed
		defer close(q)
		for {
			budget.acquire(64 << 10)
			buf := chunkPool.Get().(*[64 << 10]byte)
			n, err := src.Read(buf[:])
			budget.release(64<<10 - n)
			if n > 0 {
				q <- chunk{buf, n, time.Now()}
			} else {
				chunkPool.Put(buf)
			}
			if err != nil {
				return
			}
		}
	}()
	var free time.Time // when the link has serialized everything queued
	failed := false
	for ch := range q {
		if !failed {
			start := ch.at
			if free.After(start) {
				start = free
			}
			free = start.Add(time.Duration(float64(ch.n) / l.rate * float64(time.Second)))
			if d := time.Until(free.Add(l.oneWay)); d > 0 {
				time.Sleep(d)
			}
			if _, err := dst.Write(ch.buf[:ch.n]); err != nil {
				failed = true
				src.Close() // ends the reader; the rest of q is drained
				dst.Close()
			}
		}
		chunkPool.Put(ch.buf)
		budget.release(ch.n)
	}
	if !failed {
		dst.CloseWrite()
	}
}

// byteBudget is a counting semaphore of bytes.
type byteBudget struct {
	mu   sync.Mutex
	cond *sync.Cond
	free int
}

func newByteBudget(n int) *byteBudget {
	b := &byteBudget{free: n}
	b.cond = sync.NewCond(&b.mu)
	return b
}

func (b *byteBudget) acquire(n int) {
	b.mu.Lock()
	for b.free < n {
		b.cond.Wait()
	}
	b.free -= n
	b.mu.Unlock()
}

func (b *byteBudget) release(n int) {
	b.mu.Lock()
	b.free += n
	b.mu.Unlock()
	b.cond.Broadcast()
}

// linkNS is two network namespaces joined by a veth pair whose ends both
// delay (netem): the long link, made by the kernel.
type linkNS struct {
	a, b     string // namespace names: client side, server side
	aIP, bIP string
	setup    [][]string // the commands that made it, for the report
}

// setupLinkNS makes the namespaces and applies qdisc (tc arguments after
// "root") to both ends. It returns an error, having removed whatever it
// made, when the kernel cannot (no namespaces, no netem).
func setupLinkNS(tb testing.TB, qdisc []string) (*linkNS, error) {
	tb.Helper()
	if os.Geteuid() != 0 {
		return nil, errors.New("network namespaces need root")
	}
	tc, err := exec.LookPath("tc")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/tc"); serr != nil {
			return nil, errors.New("tc (iproute2) is not installed")
		}
		tc = "/usr/sbin/tc"
	}
	ip := ipTool()
	id := os.Getpid()
	l := &linkNS{a: fmt.Sprintf("burrow-bench-%d-a", id), b: fmt.Sprintf("burrow-bench-%d-b", id), aIP: "192.0.2.1", bIP: "192.0.2.2"}
	va, vb := fmt.Sprintf("bb%da", id%1000000), fmt.Sprintf("bb%db", id%1000000)
	remove := func() {
		for _, ns := range []string{l.a, l.b} {
			runTimeout(harness.ExitTimeout, nil, "", ip, "netns", "delete", ns)
		}
	}
	cmds := [][]string{
		{ip, "netns", "add", l.a},
		{ip, "netns", "add", l.b},
		{ip, "link", "add", va, "netns", l.a, "type", "veth", "peer", "name", vb, "netns", l.b},
		{ip, "-n", l.a, "addr", "add", l.aIP + "/24", "dev", va},
		{ip, "-n", l.b, "addr", "add", l.bIP + "/24", "dev", vb},
		{ip, "-n", l.a, "link", "set", va, "up"},
		{ip, "-n", l.b, "link", "set", vb, "up"},
		{ip, "-n", l.a, "link", "set", "lo", "up"},
		{ip, "-n", l.b, "link", "set", "lo", "up"},
		append([]string{ip, "netns", "exec", l.a, tc, "qdisc", "add", "dev", va, "root"}, qdisc...),
		append([]string{ip, "netns", "exec", l.b, tc, "qdisc", "add", "dev", vb, "root"}, qdisc...),
	}
	for _, cmd := range cmds {
		if _, err := runTimeout(harness.ExitTimeout, nil, "", cmd...); err != nil {
			remove()
			return nil, err
		}
	}
	l.setup = cmds
	tb.Cleanup(remove)
	return l, nil
}

// inNetNS runs fn on a thread that has entered network namespace ns
// (one that ip netns add made), so that the sockets fn opens live there
// and this process can reach the namespace's loopback without a helper
// process; when ns is "", fn runs as it is.
func inNetNS(ns string, fn func() error) error {
	if ns == "" {
		return fn()
	}
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, moved to another namespace, ends
		// with this goroutine instead of going back to the scheduler.
		runtime.LockOSThread()
		f, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("entering network namespace %s: %w", ns, err)
			return
		}
		done <- fn()
	}()
	return <-done
}

// ---- profiles ----

// inProcessClient runs the client package (what burrow client runs) in
// this process, so that runtime/pprof can profile it: the binary's client
// has no profiling listener. It returns the local address of each remote
// and a function that stops the client and waits for it.
func inProcessClient(ctx context.Context, srv *benchServer, tr client.Transport, remotes ...string) ([]string, func(), error) {
	tlsConfig, err := certs.ClientConfig(certs.ClientOptions{Fingerprint: srv.creds.fingerprint})
	if err != nil {
		return nil, nil, err
	}
	parsed, err := client.ParseRemotes(remotes)
	if err != nil {
		return nil, nil, err
	}
	listening := make(chan string, len(remotes))
	connected := make(chan struct{}, 1)
	cl, err := client.New(client.Config{
		URL: srv.url(), Username: benchUser, Password: benchPass, TLS: tlsConfig, Remotes: parsed, Transport: tr,
		Listening: func(_ client.Remote, a net.Addr) { listening <- a.String() },
		Connected: func() {
			select {
			case connected <- struct{}{}:
			default:
			}
		},
	})
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- cl.Run(ctx) }()
	stop := func() {
		cancel()
		<-runErr
	}
	// Listening is called in the order of the remotes, before the session
	// is up.
	var locals []string
	for len(locals) < len(remotes) || connected != nil {
		select {
		case a := <-listening:
			locals = append(locals, a)
		case <-connected:
			connected = nil
		case err := <-runErr:
			cancel()
			return nil, nil, fmt.Errorf("in-process client: %w", err)
		case <-time.After(harness.StartTimeout):
			stop()
			return nil, nil, errors.New("in-process client did not connect")
		}
	}
	return locals, stop, nil
}

// captureProfiles profiles both ends of the tunnel while work runs (about
// secs seconds): the server binary through its admin listener (--pprof),
// this process (the in-process client) with runtime/pprof.
func captureProfiles(srv *benchServer, secs int, clientOut, serverOut string, work func() error) error {
	serverProf := make(chan error, 1)
	go func() {
		serverProf <- fetchProfile(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", srv.admin, secs), serverOut, time.Duration(secs+20)*time.Second)
	}()
	f, err := os.Create(clientOut)
	if err != nil {
		return errors.Join(err, <-serverProf)
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return errors.Join(err, <-serverProf)
	}
	werr := work()
	pprof.StopCPUProfile()
	return errors.Join(werr, <-serverProf)
}

func fetchProfile(url, out string, timeout time.Duration) error {
	hc := &http.Client{Timeout: timeout}
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// profileLine is one function of go tool pprof -top.
type profileLine struct {
	flatPct, cumPct float64
	name            string
}

// profileTop is a parsed go tool pprof -top.
type profileTop struct {
	header string // Duration and total samples
	lines  []profileLine
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return runtime.GOROOT() + "/bin/go"
}

// readProfile runs go tool pprof -top on a profile.
func readProfile(path string, flags ...string) (profileTop, error) {
	argv := append([]string{goTool(), "tool", "pprof", "-top", "-nodecount=1000"}, flags...)
	out, err := runTimeout(time.Minute, nil, "", append(argv, path)...)
	if err != nil {
		return profileTop{}, err
	}
	var top profileTop
	for line := range strings.Lines(string(out)) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "Duration:") || strings.HasPrefix(line, "Showing nodes") && top.header == "" {
			top.header = line
		}
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasSuffix(f[1], "%") || !strings.HasSuffix(f[4], "%") {
			continue
		}
		flat, err1 := strconv.ParseFloat(strings.TrimSuffix(f[1], "%"), 64)
		cum, err2 := strconv.ParseFloat(strings.TrimSuffix(f[4], "%"), 64)
		if err1 != nil || err2 != nil {
			continue
		}
		top.lines = append(top.lines, profileLine{flatPct: flat, cumPct: cum, name: strings.Join(f[5:], " ")})
	}
	if len(top.lines) == 0 {
		return top, fmt.Errorf("go tool pprof -top %s: no samples", path)
	}
	return top, nil
}

// cumOf returns the cumulative share of the function named exactly fn.
func (p profileTop) cumOf(fn string) float64 {
	for _, l := range p.lines {
		if l.name == fn || l.name == fn+" (inline)" {
			return l.cumPct
		}
	}
	return 0
}

// profileCategories groups a profile's flat time by what does the work.
var profileCategories = []struct {
	name  string
	match func(string) bool
}{
	{"crypto (AES-GCM, TLS records)", func(n string) bool {
		return strings.HasPrefix(n, "crypto/") || strings.Contains(n, "/crypto/") || strings.Contains(n, "aes") || strings.Contains(n, "gcm")
	}},
	{"syscalls (read, write)", func(n string) bool { return strings.Contains(n, "syscall") }},
	{"memmove / memclr (copies)", func(n string) bool {
		return strings.HasPrefix(n, "runtime.memmove") || strings.HasPrefix(n, "runtime.memclr")
	}},
	{"yamux", func(n string) bool { return strings.HasPrefix(n, "github.com/hashicorp/yamux") }},
	{"WebSocket (framing, masking)", func(n string) bool { return strings.HasPrefix(n, "github.com/coder/websocket") }},
	{"burrow's own code", func(n string) bool { return strings.HasPrefix(n, "github.com/burrowtun/burrow") }},
	{"Go runtime (scheduler, GC, allocation)", func(n string) bool {
		return strings.HasPrefix(n, "runtime.") || strings.HasPrefix(n, "internal/runtime")
	}},
	{"other (net, io, bufio, ...)", func(string) bool { return true }},
}

// categories returns each category's share of flat time, in order.
func (p profileTop) categories() []float64 {
	out := make([]float64, len(profileCategories))
	for _, l := range p.lines {
		for i, c := range profileCategories {
			if c.match(l.name) {
				out[i] += l.flatPct
				break
			}
		}
	}
	return out
}

// cum returns the cumulative share of the first function whose name
// starts with prefix.
func (p profileTop) cum(prefix string) float64 {
	for _, l := range p.lines {
		if strings.HasPrefix(l.name, prefix) {
			return l.cumPct
		}
	}
	return 0
}

// raiseNoFile sets the soft limit of open files to the hard one; the
// processes the harness starts inherit it.
func raiseNoFile() (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	r.Cur = r.Max
	return r.Cur, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r)
}

//go:build bench

package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/burrowtun/burrow/client"
	"github.com/burrowtun/burrow/integration/harness"
	"github.com/burrowtun/burrow/mux"
)

// BenchmarkDirectThroughput is one TCP connection over loopback to an
// in-process sink, 1 MiB writes: the baseline of BenchmarkForwardThroughput.
func BenchmarkDirectThroughput(b *testing.B) {
	sink := startSink(b)
	b.Run("1MiB", func(b *testing.B) { throughputLoop(b, sink) })
}

// BenchmarkForwardThroughput is the same transfer through a local forward
// of the burrow client binary, its session to the burrow server binary,
// and the server's connection to the sink.
func BenchmarkForwardThroughput(b *testing.B) {
	sink := startSink(b)
	creds := newBenchCreds(b, "127.0.0.1")
	srv := startBenchServer(b, "server", "", creds, "127.0.0.1:0")
	_, locals := startBenchClient(b, "client", "", srv.url(), creds, nil, "127.0.0.1:0:"+sink)
	b.Run("1MiB", func(b *testing.B) { throughputLoop(b, locals[0]) })
}

// scenario is one iperf3 configuration.
type scenario struct {
	key, label string
	streams    int
	reverse    bool
}

var tpScenarios = []scenario{
	{"1up", "1 stream, client → target", 1, false},
	{"1down", "1 stream, target → client", 1, true},
	{"8up", "8 streams, client → target", 8, false},
	{"8down", "8 streams, target → client", 8, true},
}

// tpath is one way from a local port to the targets: direct, or through a
// tunnel whose processes are named for CPU and memory accounting.
type tpath struct {
	key, label string
	ns         string // the network namespace iperf3 -c runs in and the echo target is dialed from ("": this one)
	iperf      string // host:port that iperf3 -c connects to
	echo       string // host:port of the echo target through this path
	clientPIDs func() []int
	serverPIDs func() []int
}

func (p *tpath) iperfPort() (string, int) {
	host, port, _ := net.SplitHostPort(p.iperf)
	n, _ := strconv.Atoi(port)
	return host, n
}

// dialEcho connects to the echo target through the path, from its
// namespace.
func (p *tpath) dialEcho() (net.Conn, error) {
	var c net.Conn
	err := inNetNS(p.ns, func() (err error) {
		c, err = net.DialTimeout("tcp", p.echo, harness.IOTimeout)
		return err
	})
	return c, err
}

type tpRun struct {
	bps                  float64
	bytes                int64
	streams              []float64
	cpuClient, cpuServer float64 // seconds during the run
}

// latRuns holds one value per repetition: percentiles in µs, and the CPU
// time of the tunnel's processes per round trip and per connection in µs.
type latRuns struct {
	rttP50, rttP99, connP50, connP99 []float64
	cpuRTT, cpuConn                  []float64
}

// idleCost is what n idle sessions or streams cost a fresh server (and,
// for streams, the client binary): VmRSS in KiB before, right after they
// were opened, and after the server ran a garbage collection with them
// still open; the server's Go metrics at the same three points; and its
// heap profile with everything open.
type idleCost struct {
	n       int
	workers int
	took    time.Duration // to open them all
	srvRSS  [3]int64
	cliRSS  [2]int64 // streams only: the client binary has no admin listener to ask for a GC
	metrics [3]map[string]float64
	heap    profileTop
}

// perItem is the RSS per item in KiB between measurement 0 and i.
func (c idleCost) perItem(rss []int64, i int) float64 {
	return float64(rss[i]-rss[0]) / float64(c.n)
}

type scaleResult struct {
	sessions, streams     idleCost
	others                int
	tpAlone, tpWithOthers []float64 // bit/s
}

type linkResult struct {
	how      string
	why      string // why not netem, when the proxy was used
	rtt      time.Duration
	rateMbit float64
	setup    []string
	order    []string
	series   map[string][]float64 // bit/s per repetition
	variants []linkVariant
}

// profWork is one profiled workload: both ends' CPU profiles while it
// ran, and what it achieved meanwhile.
type profWork struct {
	key, label     string
	figure         string
	server, client profileTop
}

type profResult struct {
	secs  int
	works []*profWork
}

type sectionTime struct {
	name string
	took time.Duration
	load string // the 1-minute load average when it started
}

type suite struct {
	t       *testing.T
	ctx     context.Context
	started time.Time
	budget  time.Duration
	reps    int
	secs    int
	out     string
	commit  string // what was measured (sourceCommit)
	profDir string // temporary, when BENCH_PROFILES is not set

	iperf   *iperfServer
	echo    string
	sink    string
	holder  string
	creds   benchCreds
	srv     *benchServer
	cli     *bproc
	fwd     map[string]string // burrow client forwards: iperf, echo, sink, hold
	paths   []*tpath
	ciphers map[string]string // ssh path key -> negotiated cipher
	sshd    *benchSSHD        // the default-cipher sshd, for scp and rsync

	commands []string
	notes    []string
	loadAvg  [2]string
	noFile   uint64

	tp       map[string]map[string][]tpRun // scenario -> path -> runs
	hwm      map[string][2]int64           // path -> client, server VmHWM KiB
	lat      map[string]*latRuns
	gobench  map[string][]float64 // direct, forward -> MB/s
	muxBench []*muxBench
	prof     *profResult
	scale    scaleResult
	link     *linkResult
	linkEnv  *longLinkEnv
	trans    *transportResult
	idle     []idleTransport
	xfer     *xferResult
	sections []sectionTime
	skipped  []string
	retries  []string // iperf3 runs that failed once
	cut      []string // repetition loops cut short by the budget
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func TestBenchSuite(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &suite{t: t, ctx: ctx, started: time.Now(), reps: envInt("BENCH_REPEAT", 3), secs: envInt("BENCH_SECONDS", 2),
		out: "../../docs", budget: 20 * time.Minute,
		tp: map[string]map[string][]tpRun{}, hwm: map[string][2]int64{}, lat: map[string]*latRuns{},
		gobench: map[string][]float64{}, ciphers: map[string]string{}}
	if d, err := time.ParseDuration(os.Getenv("BENCH_BUDGET")); err == nil && d > 0 {
		s.budget = d
	}
	if o := os.Getenv("BENCH_OUT"); o != "" {
		s.out = o
	}
	s.loadAvg[0] = loadAvg()
	s.commit = sourceCommit()
	n, err := raiseNoFile()
	if err != nil {
		t.Logf("RLIMIT_NOFILE: %v", err)
	}
	s.noFile = n

	s.section("setup", 0, s.setup)
	s.section("throughput", time.Duration(len(tpScenarios)*len(s.paths))*time.Duration(s.secs*1000+800)*time.Millisecond, s.throughput)
	s.section("latency", 20*time.Second, s.latency)
	s.section("go benchmarks", 40*time.Second, s.goBenchmarks)
	s.section("profile", 25*time.Second, s.profile)
	s.section("scale", 60*time.Second, s.scaleRun)
	s.section("long link", 7*5*time.Second, s.longLink)
	s.section("transports", 4*time.Minute, s.transports)
	s.section("transfers", 2*time.Minute, s.transfers)
	// Last: starting a thousand processes lifts the load average for a
	// minute, which the next section's reading would show.
	s.section("idle sessions", 2*time.Minute, s.idleSessions)
	s.loadAvg[1] = loadAvg()

	if err := s.write(); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s and %s in %v", filepath.Join(s.out, "benchmarks.md"), filepath.Join(s.out, s.chartName()), time.Since(s.started).Round(time.Second))
}

// section runs fn unless it would end after the budget, or BENCH_ONLY
// (a comma-separated list of section names) leaves it out, and times it.
func (s *suite) section(name string, estimate time.Duration, fn func()) {
	if s.t.Failed() {
		return
	}
	if only := os.Getenv("BENCH_ONLY"); only != "" && name != "setup" && !slices.Contains(strings.Split(only, ","), name) {
		s.skipped = append(s.skipped, name+" (BENCH_ONLY)")
		return
	}
	if left := s.budget - time.Since(s.started); estimate > left {
		s.skipped = append(s.skipped, fmt.Sprintf("%s (about %v needed, %v left of the %v budget)", name, estimate.Round(time.Second), left.Round(time.Second), s.budget))
		s.t.Logf("skipping %s: about %v needed, %v left", name, estimate.Round(time.Second), left.Round(time.Second))
		return
	}
	start := time.Now()
	load1, _, _ := strings.Cut(loadAvg(), " ")
	s.t.Logf("%s ... (load average %s)", name, load1)
	fn()
	s.sections = append(s.sections, sectionTime{name, time.Since(start), load1})
	s.t.Logf("%s done in %v", name, time.Since(start).Round(100*time.Millisecond))
}

// record keeps a command line for the report, temporary paths shortened.
func (s *suite) record(argv ...string) {
	s.commands = append(s.commands, shellLine(argv))
}

// tempPath is a file in a test's temporary directory: shown as $TMP/...
var tempPath = regexp.MustCompile(regexp.QuoteMeta(os.TempDir()) + `/[^/\s'"]+/[0-9]+/`)

func shellLine(argv []string) string {
	var parts []string
	for _, a := range argv {
		a = strings.ReplaceAll(a, burrow.Path(), "bin/burrow")
		a = tempPath.ReplaceAllString(a, "$$TMP/")
		if strings.ContainsAny(a, " '\"*|;&<>()") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

func cpuOf(pids []int) float64 {
	var sum float64
	for _, p := range pids {
		if c, err := procCPU(p); err == nil {
			sum += c
		}
	}
	return sum
}

// statusOf sums a "Vm..." line of the processes' /proc/PID/status, KiB.
func statusOf(pids []int, field string) int64 {
	var sum int64
	for _, p := range pids {
		if k, err := procStatusKiB(p, field); err == nil {
			sum += k
		}
	}
	return sum
}

func loadAvg() string {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func (s *suite) setup() {
	t := s.t
	s.iperf = startIperfServer(t, "", "127.0.0.1")
	s.record(s.iperf.argv...)
	iperfAddr := fmt.Sprintf("127.0.0.1:%d", s.iperf.port)
	s.echo = startBenchEcho(t, "")
	s.sink = startSink(t)
	var holder *bproc
	holder, s.holder = startHolder(t)
	_ = holder

	s.creds = newBenchCreds(t, "127.0.0.1", "localhost")
	s.record("bin/burrow", "cert", "self-signed", "--host", "127.0.0.1", "--host", "localhost", "--out", "$TMP")
	s.record("bin/burrow", "user", "add", "--authfile", "$TMP/users.json", "--password-stdin", benchUser)
	s.srv = startBenchServer(t, "server", "", s.creds, "127.0.0.1:0")
	s.record(s.srv.argv...)
	remotes := []string{"127.0.0.1:0:" + iperfAddr, "127.0.0.1:0:" + s.echo, "127.0.0.1:0:" + s.sink, "127.0.0.1:0:" + s.holder}
	var locals []string
	s.cli, locals = startBenchClient(t, "client", "", s.srv.url(), s.creds, nil, remotes...)
	s.record(append([]string{"BURROW_AUTH=" + benchUser + ":…"}, s.cli.argv...)...)
	s.fwd = map[string]string{"iperf": locals[0], "echo": locals[1], "sink": locals[2], "hold": locals[3]}

	s.paths = append(s.paths,
		&tpath{key: "direct", label: "direct loopback", iperf: iperfAddr, echo: s.echo,
			clientPIDs: func() []int { return nil }, serverPIDs: func() []int { return nil }},
		&tpath{key: "burrow", label: "burrow", iperf: s.fwd["iperf"], echo: s.fwd["echo"],
			clientPIDs: func() []int { return []int{s.cli.pid()} }, serverPIDs: func() []int { return []int{s.srv.pid()} }})

	// One sshd per cipher, so that each one's processes are one tunnel's.
	for _, v := range []struct{ key, cipher string }{{"ssh", ""}, {"ssh-aes", "aes128-gcm@openssh.com"}} {
		sd := startBenchSSHD(t)
		s.record(sd.argv...)
		if s.sshd == nil {
			s.sshd = sd
		}
		s.ciphers[v.key] = sd.negotiatedCipher(t, v.cipher)
		fw := startSSHForward(t, sd, v.cipher, iperfAddr, s.echo)
		s.record(fw.argv...)
		label := "ssh -L, default cipher (" + s.ciphers[v.key] + ")"
		if v.cipher != "" {
			label = "ssh -L -c " + v.cipher
		}
		s.paths = append(s.paths, &tpath{key: v.key, label: label, iperf: fw.locals[0], echo: fw.locals[1],
			clientPIDs: func() []int { return []int{fw.pid()} },
			serverPIDs: func() []int { return append([]int{sd.pid()}, descendants(sd.pid())...) }})
	}
	for _, p := range s.paths {
		host, port, _ := net.SplitHostPort(p.iperf)
		pn, _ := strconv.Atoi(port)
		s.record(iperfArgs(host, pn, 1, false, s.secs, 0)...)
	}
	s.commands = append(s.commands, "# and the same with -P 8 (8 streams), and with -R (target → client)")
}

// iperf3 runs iperf3 through runIperf and retries once after a failure,
// which the report lists: on a loaded machine an iperf3 run now and then
// ends early with "control socket has closed unexpectedly".
func (s *suite) iperf3(what, ns, host string, port, streams int, reverse bool, secs, omit int) iperfResult {
	r, err := runIperf(ns, host, port, streams, reverse, secs, omit)
	if err == nil {
		return r
	}
	s.retries = append(s.retries, fmt.Sprintf("%s: %v", what, err))
	s.t.Logf("%s: %v; once more", what, err)
	time.Sleep(time.Second)
	r, err = runIperf(ns, host, port, streams, reverse, secs, omit)
	if err != nil {
		s.t.Fatalf("%s, again: %v", what, err)
	}
	return r
}

// outOfTime reports whether a repetition loop that has done done of its
// planned repetitions should stop because the time budget is spent, and
// notes the cut for the report. The first repetition always runs.
func (s *suite) outOfTime(what string, done, planned int) bool {
	if done == 0 || time.Since(s.started) < s.budget {
		return false
	}
	s.cut = append(s.cut, fmt.Sprintf("%s: %d of %d repetitions", what, done, planned))
	s.t.Logf("%s: stopping after %d repetitions, the time budget is spent", what, done)
	return true
}

// rotate returns the paths starting at the i-th, so that no path always
// runs first (or right after a given other).
func rotate[T any](list []T, i int) []T {
	i %= len(list)
	return append(append([]T{}, list[i:]...), list[:i]...)
}

func (s *suite) throughput() {
	s.tp = s.measureThroughput("throughput", s.paths, tpScenarios, s.secs, 0)
	for _, p := range s.paths {
		s.hwm[p.key] = [2]int64{statusOf(p.clientPIDs(), "VmHWM"), statusOf(p.serverPIDs(), "VmHWM")}
	}
}

// measureThroughput runs iperf3 over each path in each scenario, secs
// seconds after omit, s.reps times with the order of the paths rotated,
// after a warm-up run per path, and returns the runs by scenario and path
// with the CPU time of the path's processes during each.
func (s *suite) measureThroughput(what string, paths []*tpath, scenarios []scenario, secs, omit int) map[string]map[string][]tpRun {
	out := map[string]map[string][]tpRun{}
	for _, p := range paths { // warm-up, not recorded
		host, port := p.iperfPort()
		if _, err := runIperf(p.ns, host, port, 1, false, 1, 0); err != nil {
			s.t.Fatalf("%s: %v", p.label, err)
		}
	}
	for rep := range s.reps {
		if s.outOfTime(what, rep, s.reps) {
			break
		}
		for _, sc := range scenarios {
			for _, p := range rotate(paths, rep) {
				c0, s0 := cpuOf(p.clientPIDs()), cpuOf(p.serverPIDs())
				host, port := p.iperfPort()
				r := s.iperf3(p.label+", "+sc.label, p.ns, host, port, sc.streams, sc.reverse, secs, omit)
				run := tpRun{bps: r.bps, bytes: r.bytes, streams: r.streams,
					cpuClient: cpuOf(p.clientPIDs()) - c0, cpuServer: cpuOf(p.serverPIDs()) - s0}
				if out[sc.key] == nil {
					out[sc.key] = map[string][]tpRun{}
				}
				out[sc.key][p.key] = append(out[sc.key][p.key], run)
				s.t.Logf("rep %d %-12s %-28s %7.2f Gbit/s  cpu %.2fs+%.2fs", rep+1, sc.key, p.key, r.bps/1e9, run.cpuClient, run.cpuServer)
			}
		}
	}
	return out
}

// Latency: each repetition makes latencyRounds rounds over the paths
// (the order rotated), each round latencyRTTs round trips on one open
// connection per path and latencyConns new connections, so that load
// that comes and goes in the middle of a repetition falls on every path
// alike.
const latencyRounds, latencyRTTs, latencyConns, latencyWarm = 10, 200, 30, 100

func (s *suite) latency() {
	s.lat = s.measureLatency(s.paths, latencyRounds, latencyRTTs, latencyConns, latencyWarm)
}

// measureLatency makes s.reps repetitions of rounds rounds over the paths,
// each round rtts round trips on one connection per path (opened for the
// repetition and warmed by warm round trips) and conns new connections
// (none when 0; they are dialed from this namespace), and returns each
// path's percentiles per repetition.
func (s *suite) measureLatency(paths []*tpath, rounds, rtts, conns, warm int) map[string]*latRuns {
	out := map[string]*latRuns{}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	for rep := range s.reps {
		type acc struct {
			conn            net.Conn
			rtt, connect    []time.Duration
			cpuRTT, cpuConn float64
		}
		accs := map[string]*acc{}
		for _, p := range paths {
			c, err := p.dialEcho()
			if err != nil {
				s.t.Fatalf("%s: %v", p.label, err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Minute))
			if _, err := rttOn(c, warm); err != nil {
				s.t.Fatalf("%s: round trips: %v", p.label, err)
			}
			accs[p.key] = &acc{conn: c}
		}
		for round := range rounds {
			for _, p := range rotate(paths, rep+round) {
				a := accs[p.key]
				tunnelCPU := func() float64 { return cpuOf(p.clientPIDs()) + cpuOf(p.serverPIDs()) }
				c0 := tunnelCPU()
				rtt, err := rttOn(a.conn, rtts)
				if err != nil {
					s.t.Fatalf("%s: round trips: %v", p.label, err)
				}
				c1 := tunnelCPU()
				a.cpuRTT += c1 - c0
				a.rtt = append(a.rtt, rtt...)
				if conns == 0 {
					continue
				}
				conn, err := measureConnect(p.echo, conns)
				if err != nil {
					s.t.Fatalf("%s: new connections: %v", p.label, err)
				}
				a.cpuConn += tunnelCPU() - c1
				a.connect = append(a.connect, conn...)
			}
		}
		for _, p := range paths {
			a := accs[p.key]
			a.conn.Close()
			l := out[p.key]
			if l == nil {
				l = &latRuns{}
				out[p.key] = l
			}
			l.rttP50 = append(l.rttP50, us(percentile(a.rtt, 50)))
			l.rttP99 = append(l.rttP99, us(percentile(a.rtt, 99)))
			l.cpuRTT = append(l.cpuRTT, a.cpuRTT*1e6/float64(len(a.rtt)))
			if conns > 0 {
				l.connP50 = append(l.connP50, us(percentile(a.connect, 50)))
				l.connP99 = append(l.connP99, us(percentile(a.connect, 99)))
				l.cpuConn = append(l.cpuConn, a.cpuConn*1e6/float64(len(a.connect)))
			}
			s.t.Logf("rep %d %-10s rtt p50 %.0fµs p99 %.0fµs, new conn p50 %.0fµs p99 %.0fµs", rep+1, p.key,
				us(percentile(a.rtt, 50)), us(percentile(a.rtt, 99)), us(percentile(a.connect, 50)), us(percentile(a.connect, 99)))
		}
	}
	return out
}

func (s *suite) goBenchmarks() {
	targets := []struct{ key, addr string }{{"direct", s.sink}, {"forward", s.fwd["sink"]}}
	for rep := range s.reps {
		for _, tg := range rotate(targets, rep) {
			r := testing.Benchmark(func(b *testing.B) { throughputLoop(b, tg.addr) })
			if r.N == 0 || r.T == 0 {
				s.t.Fatalf("Go benchmark %s failed", tg.key)
			}
			mbs := float64(r.Bytes) * float64(r.N) / r.T.Seconds() / 1e6
			s.gobench[tg.key] = append(s.gobench[tg.key], mbs)
			s.t.Logf("rep %d %s %s %.0f MB/s", rep+1, tg.key, r, mbs)
		}
	}
	s.muxBenchmarks()
}

// muxBenchArgs are the mux package's benchmarks of the tunnel and its
// baselines in one process, with allocation counts.
var muxBenchArgs = []string{"test", "-run", "^$", "-bench", `StreamThroughput/wss\+batch|SmallWrites/wss\+batch|SmallWritesStreams/wss\+batch|TLSBaseline|TCPBaseline`, "-benchmem", "-count", "3"}

// muxBench is one benchmark's runs.
type muxBench struct {
	name                string
	mbs, bytesOp, alloc []float64
}

var benchLine = regexp.MustCompile(`^Benchmark(\S+?)(?:-\d+)?\s+\d+\s+[\d.]+ ns/op\s+([\d.]+) MB/s\s+(\d+) B/op\s+(\d+) allocs/op`)

// muxBenchmarks runs the mux package's Go benchmarks (go test -bench
// -benchmem) and keeps each one's MB/s, B/op and allocs/op.
func (s *suite) muxBenchmarks() {
	argv := append([]string{goTool()}, muxBenchArgs...)
	argv = append(argv, "github.com/burrowtun/burrow/mux")
	out, err := runTimeout(3*time.Minute, nil, "", argv...)
	if err != nil {
		s.t.Fatalf("mux benchmarks: %v\n%s", err, out)
	}
	byName := map[string]*muxBench{}
	for line := range strings.Lines(string(out)) {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		b := byName[m[1]]
		if b == nil {
			b = &muxBench{name: m[1]}
			byName[m[1]] = b
			s.muxBench = append(s.muxBench, b)
		}
		for i, into := range []*[]float64{&b.mbs, &b.bytesOp, &b.alloc} {
			v, _ := strconv.ParseFloat(m[i+2], 64)
			*into = append(*into, v)
		}
	}
	if len(s.muxBench) == 0 {
		s.t.Fatalf("mux benchmarks printed no results:\n%s", out)
	}
	s.t.Logf("mux benchmarks: %d results", len(s.muxBench))
}

// profileDir is where profiles go: BENCH_PROFILES, or a temporary
// directory.
func (s *suite) profileDir() string {
	dir := os.Getenv("BENCH_PROFILES")
	if dir == "" {
		if s.profDir == "" {
			s.profDir = s.t.TempDir()
		}
		return s.profDir
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		s.t.Fatal(err)
	}
	return dir
}

func (s *suite) profile() {
	locals, stop, err := inProcessClient(s.ctx, s.srv, client.TransportAuto, fmt.Sprintf("127.0.0.1:0:127.0.0.1:%d", s.iperf.port), "127.0.0.1:0:"+s.echo)
	if err != nil {
		s.t.Fatal(err)
	}
	defer stop()
	_, port, _ := net.SplitHostPort(locals[0])
	iperfPort, _ := strconv.Atoi(port)
	const secs = 5
	p := &profResult{secs: secs}
	iperfWork := func(reverse bool) func() (string, error) {
		return func() (string, error) {
			r, err := runIperf("", "127.0.0.1", iperfPort, 1, reverse, secs, 0)
			return gbit(r.bps) + " Gbit/s", err
		}
	}
	works := []struct {
		key, label string
		run        func() (string, error)
	}{
		{"upload", "1 stream, client → target (iperf3)", iperfWork(false)},
		{"download", "1 stream, target → client (iperf3 -R)", iperfWork(true)},
		{"rtt", "64-byte round trips on one connection", func() (string, error) {
			d, err := measureRTTUntil(locals[1], time.Now().Add(secs*time.Second), 200000)
			return fmt.Sprintf("%d round trips, p50 %.0f µs", len(d), float64(percentile(d, 50))/float64(time.Microsecond)), err
		}},
		{"connect", "new connections (connect, one 64-byte round trip, close)", func() (string, error) {
			var all []time.Duration
			for end := time.Now().Add(secs * time.Second); time.Now().Before(end); {
				d, err := measureConnect(locals[1], 20)
				if err != nil {
					return "", err
				}
				all = append(all, d...)
			}
			return fmt.Sprintf("%d connections, p50 %.0f µs", len(all), float64(percentile(all, 50))/float64(time.Microsecond)), nil
		}},
	}
	for _, w := range works {
		p.works = append(p.works, s.profileWork(s.srv, secs, w.key, w.label, w.run))
	}
	s.prof = p
	s.commands = append(s.commands, fmt.Sprintf("# profiles: GET http://ADMIN/debug/pprof/profile?seconds=%d from the server (--admin 127.0.0.1:0 --pprof),", secs),
		"# runtime/pprof around the client package in the harness, and GET http://ADMIN/debug/pprof/heap for the scale servers")
}

// profileWork profiles both ends of a tunnel, srv and the in-process
// client, while run runs (about secs seconds), into files named after
// key in the profile directory, and reads the profiles.
func (s *suite) profileWork(srv *benchServer, secs int, key, label string, run func() (string, error)) *profWork {
	file := func(side string) string {
		return filepath.Join(s.profileDir(), side+"-"+strings.ReplaceAll(key, " ", "-")+".pprof")
	}
	pw := &profWork{key: key, label: label}
	err := captureProfiles(srv, secs, file("client"), file("server"), func() error {
		var err error
		pw.figure, err = run()
		return err
	})
	if err != nil {
		s.t.Fatalf("profiles of %s: %v", label, err)
	}
	if pw.client, err = readProfile(file("client")); err != nil {
		s.t.Fatal(err)
	}
	if pw.server, err = readProfile(file("server")); err != nil {
		s.t.Fatal(err)
	}
	return pw
}

func (s *suite) scaleRun() {
	t := s.t
	// One stream's throughput alone and beside 1,000 open, idle streams
	// on the same session.
	s.scale.others = 1000
	hold := s.fwd["hold"]
	host, port, _ := net.SplitHostPort(s.fwd["iperf"])
	pn, _ := strconv.Atoi(port)
	for rep := range s.reps {
		if s.outOfTime("one stream among many", rep, s.reps) {
			break
		}
		alone := s.iperf3("one stream alone", "", host, pn, 1, false, s.secs, 0)
		conns, err := openIdle(hold, s.scale.others, 32)
		if err != nil {
			t.Fatalf("opening %d idle streams: %v", s.scale.others, err)
		}
		with := s.iperf3("one stream beside idle ones", "", host, pn, 1, false, s.secs, 0)
		closeAll(conns)
		s.scale.tpAlone = append(s.scale.tpAlone, alone.bps)
		s.scale.tpWithOthers = append(s.scale.tpWithOthers, with.bps)
		t.Logf("rep %d one stream alone %.2f Gbit/s, beside %d idle streams %.2f Gbit/s", rep+1, alone.bps/1e9, s.scale.others, with.bps/1e9)
		time.Sleep(500 * time.Millisecond) // let the closed streams go
	}

	// 10,000 idle streams on one session of a fresh server and client.
	creds := withCheapHash(t, newBenchCreds(t, "127.0.0.1"))
	srv := startBenchServer(t, "streams server", "", creds, "127.0.0.1:0")
	cli, locals := startBenchClient(t, "streams client", "", srv.url(), creds, nil, "127.0.0.1:0:"+s.holder)
	s.scale.streams = s.measureIdle(srv, cli, 10000, 64, "server-10000-streams", func(n, workers int) (func(), error) {
		conns, err := openIdle(locals[0], n, workers)
		return func() { closeAll(conns) }, err
	})
	cli.stop(t)
	srv.stop(t)

	// 1,000 idle sessions, opened in this process with the client package.
	creds = withCheapHash(t, newBenchCreds(t, "127.0.0.1"))
	srv = startBenchServer(t, "sessions server", "", creds, "127.0.0.1:0", "--max-sessions-per-user", "2000")
	s.commands = append(s.commands, "# scale: fresh servers as above, users file with a bcrypt hash; the sessions server also with --max-sessions-per-user 2000")
	s.scale.sessions = s.measureIdle(srv, nil, 1000, 16, "server-1000-sessions", func(n, workers int) (func(), error) {
		sessions, err := openSessions(s.ctx, srv, n, workers)
		return func() { closeSessions(sessions) }, err
	})
	srv.stop(t)
}

// measureIdle opens 10 items with open (so that what every session or
// stream shares is already there), measures, opens n more, workers at a
// time, and measures right away and again after the server has run a
// garbage collection (GET /debug/pprof/heap?gc=1). cli, when not nil, is
// the client binary, measured too.
func (s *suite) measureIdle(srv *benchServer, cli *bproc, n, workers int, name string, open func(n, workers int) (func(), error)) idleCost {
	t := s.t
	c := idleCost{n: n, workers: workers}
	closeWarm, err := open(10, 4)
	if err != nil {
		t.Fatalf("%s: opening the first 10: %v", name, err)
	}
	defer closeWarm()
	s.serverGC(srv)
	c.srvRSS[0] = settleRSS(srv.pid())
	c.metrics[0] = s.serverMetrics(srv)
	if cli != nil {
		c.cliRSS[0] = settleRSS(cli.pid())
	}
	start := time.Now()
	closeAll, err := open(n, workers)
	if err != nil {
		t.Fatalf("%s: opening %d: %v", name, n, err)
	}
	defer closeAll()
	c.took = time.Since(start)
	c.srvRSS[1] = settleRSS(srv.pid())
	c.metrics[1] = s.serverMetrics(srv)
	if cli != nil {
		c.cliRSS[1] = settleRSS(cli.pid())
	}
	s.serverGC(srv)
	c.heap = s.heapProfile(srv, name)
	c.srvRSS[2] = settleRSS(srv.pid())
	c.metrics[2] = s.serverMetrics(srv)
	t.Logf("%s: server %d -> %d KiB, %d KiB after a GC; client %d -> %d KiB (opened in %v)", name,
		c.srvRSS[0], c.srvRSS[1], c.srvRSS[2], c.cliRSS[0], c.cliRSS[1], c.took.Round(time.Millisecond))
	return c
}

// serverGC makes the server run two garbage collections: what sync.Pools
// hold survives the first.
func (s *suite) serverGC(srv *benchServer) {
	for range 2 {
		if err := fetchProfile("http://"+srv.admin+"/debug/pprof/heap?gc=1", os.DevNull, time.Minute); err != nil {
			s.t.Fatalf("server GC: %v", err)
		}
	}
}

func (s *suite) serverMetrics(srv *benchServer) map[string]float64 {
	m, err := srv.metrics()
	if err != nil {
		s.t.Fatalf("server metrics: %v", err)
	}
	return m
}

// heapProfile reads the server's heap profile (in-use space).
func (s *suite) heapProfile(srv *benchServer, name string) profileTop {
	path := filepath.Join(s.profileDir(), name+".heap.pprof")
	if err := fetchProfile("http://"+srv.admin+"/debug/pprof/heap", path, time.Minute); err != nil {
		s.t.Fatalf("heap profile: %v", err)
	}
	top, err := readProfile(path, "-sample_index=inuse_space")
	if err != nil {
		s.t.Fatal(err)
	}
	return top
}

// linkVariant is a burrow server and client pair on the long link with
// its own window settings.
type linkVariant struct {
	key        string // row label suffix: "" for the defaults
	serverArgs []string
	clientArgs []string
	dirs       string // which directions it is measured in: "→", "←" or "→←"
}

// linkVariants are measured beside the defaults: the other window sizes
// of linkWindows on both ends, and a client window of 1 MiB, whose bound
// (window/RTT) shows that the window is what limits a long link.
func linkVariants() []linkVariant {
	vs := []linkVariant{{key: ""}}
	for _, w := range []int{8 << 20, 16 << 20} {
		if w == mux.DefaultStreamWindow {
			continue
		}
		arg := strconv.Itoa(w)
		vs = append(vs, linkVariant{key: fmt.Sprintf("--stream-window %d MiB", w>>20),
			serverArgs: []string{"--stream-window", arg}, clientArgs: []string{"--stream-window", arg}, dirs: "→←"})
	}
	return append(vs, linkVariant{key: "--stream-window 1 MiB", clientArgs: []string{"--stream-window", "1048576"}, dirs: "←"})
}

func (v linkVariant) label() string {
	if v.key == "" {
		return "burrow"
	}
	return "burrow, " + v.key
}

// Each long-link run: iperf3 -t linkSecs -O linkOmit (slow start left out).
const linkSecs, linkOmit = 3, 1

func (s *suite) longLink() {
	t := s.t
	const secs, omit = linkSecs, linkOmit
	e := s.longLinkEnv()
	l := &linkResult{how: e.how, why: e.why, rtt: e.rtt, rateMbit: e.rateMbit, series: map[string][]float64{}, setup: slices.Clone(e.setup)}
	s.link = l
	type target struct {
		ns   string
		host string
		port int
	}
	direct := target{e.clientNS(), e.directHost, e.directPort}
	variants := linkVariants()
	l.variants = variants
	tunnels := make([]target, len(variants))
	for i, v := range variants {
		_, _, locals, lines := e.tunnel(t, "link "+v.key, v.serverArgs, v.clientArgs, "127.0.0.1:0:"+e.iperf)
		l.setup = append(l.setup, lines...)
		_, port, _ := net.SplitHostPort(locals[0])
		n, _ := strconv.Atoi(port)
		tunnels[i] = target{e.clientNS(), "127.0.0.1", n}
	}
	type run struct {
		key     string
		to      target
		reverse bool
	}
	var runs []run
	for _, dir := range []string{"→", "←"} {
		runs = append(runs, run{"direct " + dir, direct, dir == "←"})
		for i, v := range variants {
			if v.dirs == "" || strings.Contains(v.dirs, dir) {
				runs = append(runs, run{v.label() + " " + dir, tunnels[i], dir == "←"})
			}
		}
	}
	for _, r := range runs {
		l.order = append(l.order, r.key)
	}
	for rep := range s.reps {
		if s.outOfTime("long link", rep, s.reps) {
			break
		}
		for _, r := range rotate(runs, rep) {
			res := s.iperf3("long link, "+r.key, r.to.ns, r.to.host, r.to.port, 1, r.reverse, secs, omit)
			l.series[r.key] = append(l.series[r.key], res.bps)
			t.Logf("rep %d long link %-36s %7.1f Mbit/s", rep+1, r.key, res.bps/1e6)
		}
	}
	l.setup = append(l.setup, strings.Replace(shellLine(iperfArgs("HOST", 0, 1, false, secs, omit)), "-p 0", "-p PORT", 1)+"   # -R for ←; HOST:PORT direct, or the client's forward")
}

// longLinkEnv is the simulated long link, made on first use and shared
// by the sections that cross it: two network namespaces joined by a
// veth pair with netem on both ends when the kernel has them, else a
// delay proxy on loopback. Behind it (in the server's namespace) are
// iperf3 -s and an echo target.
type longLinkEnv struct {
	ns          *linkNS  // nil: the delay proxy
	link        linkSpec // the delay proxy's link
	rtt         time.Duration
	rateMbit    float64
	how, why    string
	setup       []string // how the link and its targets were made
	creds       benchCreds
	iperf, echo string // host:port of the targets, as a server behind the link reaches them
	directHost  string // where iperf3 -c reaches iperf3 -s across the link, without a tunnel
	directPort  int
}

func (s *suite) longLinkEnv() *longLinkEnv {
	if s.linkEnv != nil {
		return s.linkEnv
	}
	t := s.t
	const oneWay = 25 * time.Millisecond
	const rateMbit = 1000
	e := &longLinkEnv{rtt: 2 * oneWay, rateMbit: rateMbit}
	s.linkEnv = e
	qdisc := []string{"netem", "delay", "25ms", "rate", "1000mbit", "limit", "100000"}
	if q := os.Getenv("BENCH_LINK_QDISC"); q != "" {
		qdisc = strings.Fields(q)
	}
	var nsErr error
	if os.Getenv("BENCH_LINK") != "proxy" {
		e.ns, nsErr = setupLinkNS(t, qdisc)
	} else {
		nsErr = fmt.Errorf("BENCH_LINK=proxy")
	}
	if e.ns != nil {
		e.how = fmt.Sprintf("two network namespaces joined by a veth pair, `tc qdisc add dev VETH root %s` on both ends", strings.Join(qdisc, " "))
		for _, c := range e.ns.setup {
			e.setup = append(e.setup, shellLine(c))
		}
		e.creds = newBenchCreds(t, e.ns.bIP)
		ip := startIperfServer(t, e.ns.b, "")
		e.setup = append(e.setup, shellLine(ip.argv))
		e.iperf = fmt.Sprintf("127.0.0.1:%d", ip.port)
		e.directHost, e.directPort = e.ns.bIP, ip.port
		e.echo = startBenchEcho(t, e.ns.b)
		e.setup = append(e.setup, "# and an echo target in the harness, listening on 127.0.0.1 in "+e.ns.b)
		return e
	}
	e.how = fmt.Sprintf("a delay proxy in the harness on loopback: each direction serialized at %d Mbit/s and delivered %v later, at most one bandwidth-delay product plus 1 MiB held", rateMbit, oneWay)
	e.why = nsErr.Error()
	if _, stderr, ok := strings.Cut(e.why, "stderr: "); ok {
		e.why = "`tc qdisc add … " + strings.Join(qdisc, " ") + "` failed: " + strings.TrimSpace(stderr)
	}
	e.link = linkSpec{oneWay: oneWay, rate: rateMbit * 1e6 / 8, queue: 1 << 20}
	e.creds = s.creds
	e.iperf, e.echo = fmt.Sprintf("127.0.0.1:%d", s.iperf.port), s.echo
	iperfProxy := startDelayProxy(t, e.iperf, e.link)
	e.setup = append(e.setup, fmt.Sprintf("# delay proxy %s -> iperf3 -s %s", iperfProxy, e.iperf))
	host, port, _ := net.SplitHostPort(iperfProxy)
	e.directHost = host
	e.directPort, _ = strconv.Atoi(port)
	return e
}

// clientNS is the namespace on the near side of the link, where the
// clients and iperf3 -c run ("" with the delay proxy).
func (e *longLinkEnv) clientNS() string {
	if e.ns == nil {
		return ""
	}
	return e.ns.a
}

// tunnel starts a burrow server behind the link and a client on the near
// side whose session crosses it, with a forward to each remote; it
// returns the client's local addresses and the commands, for the report.
func (e *longLinkEnv) tunnel(t *testing.T, name string, serverArgs, clientArgs []string, remotes ...string) (*benchServer, *bproc, []string, []string) {
	if e.ns != nil {
		srv := startBenchServer(t, name+" server", e.ns.b, e.creds, e.ns.bIP+":0", serverArgs...)
		cl, locals := startBenchClient(t, name+" client", e.ns.a, srv.url(), e.creds, clientArgs, remotes...)
		return srv, cl, locals, []string{shellLine(srv.argv), shellLine(cl.argv)}
	}
	srv := startBenchServer(t, name+" server", "", e.creds, "127.0.0.1:0", serverArgs...)
	proxy := startDelayProxy(t, srv.addr, e.link)
	cl, locals := startBenchClient(t, name+" client", "", "wss://"+proxy, e.creds, clientArgs, remotes...)
	return srv, cl, locals, []string{shellLine(srv.argv), fmt.Sprintf("# delay proxy %s -> burrow server %s", proxy, srv.addr), shellLine(cl.argv)}
}

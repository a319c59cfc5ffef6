//go:build bench

package bench

import (
	"bufio"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/burrowtun/burrow/mux"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// The report: docs/benchmarks.md and its chart, from the suite's samples.

func medianOf(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func runsBps(runs []tpRun) []float64 {
	var out []float64
	for _, r := range runs {
		out = append(out, r.bps)
	}
	return out
}

// unfairness is how far the furthest stream of a run is from the mean
// of its streams, as a fraction of the mean; the median over runs.
func unfairness(runs []tpRun) float64 {
	var out []float64
	for _, r := range runs {
		if len(r.streams) < 2 {
			continue
		}
		var sum float64
		for _, b := range r.streams {
			sum += b
		}
		mean := sum / float64(len(r.streams))
		worst := 0.0
		for _, b := range r.streams {
			worst = max(worst, math.Abs(b-mean)/mean)
		}
		out = append(out, worst)
	}
	return medianOf(out)
}

const gib = 1 << 30

// cpuPerGiB is the CPU seconds of the tunnel's processes (client and
// server together) per GiB received; the median over runs.
func cpuPerGiB(runs []tpRun) float64 {
	var out []float64
	for _, r := range runs {
		if r.bytes > 0 {
			out = append(out, (r.cpuClient+r.cpuServer)/(float64(r.bytes)/gib))
		}
	}
	return medianOf(out)
}

func cpuSplit(runs []tpRun) (client, server float64) {
	var c, s []float64
	for _, r := range runs {
		if r.bytes > 0 {
			c = append(c, r.cpuClient/(float64(r.bytes)/gib))
			s = append(s, r.cpuServer/(float64(r.bytes)/gib))
		}
	}
	return medianOf(c), medianOf(s)
}

func gbit(bps float64) string { return fmt.Sprintf("%.2f", bps/1e9) }

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "**GAP**"
}

type targetRow struct {
	what, target, measured string
	ok                     bool
	gap                    string // which part of Gaps explains a miss
}

func (s *suite) pathLabel(key string) string {
	for _, p := range s.paths {
		if p.key == key {
			return p.label
		}
	}
	return key
}

// sshBest returns the ssh path with the lower value of f, and the value.
func (s *suite) sshBest(f func(key string) float64) (string, float64) {
	best, val := "", math.Inf(1)
	for _, k := range []string{"ssh", "ssh-aes"} {
		if v := f(k); v < val {
			best, val = k, v
		}
	}
	return best, val
}

func (s *suite) targets() []targetRow {
	var rows []targetRow
	tpMed := func(sc, path string) float64 { return medianOf(runsBps(s.tp[sc][path])) }
	if len(s.tp) > 0 {
		for _, sc := range []string{"1up", "1down"} {
			label := map[string]string{"1up": "client → target", "1down": "target → client"}[sc]
			r := tpMed(sc, "burrow") / tpMed(sc, "ssh-aes")
			rows = append(rows, targetRow{"1-stream throughput, " + label, "≥ 1.0× ssh -L aes128-gcm",
				fmt.Sprintf("%.2f× (%s vs %s Gbit/s)", r, gbit(tpMed(sc, "burrow")), gbit(tpMed(sc, "ssh-aes"))), r >= 1.0, "throughput"})
			d := tpMed(sc, "burrow") / tpMed(sc, "direct")
			rows = append(rows, targetRow{"1-stream throughput, " + label, "≥ 40% of direct loopback",
				fmt.Sprintf("%.0f%% (%s vs %s Gbit/s)", 100*d, gbit(tpMed(sc, "burrow")), gbit(tpMed(sc, "direct"))), d >= 0.4, "throughput"})
		}
		for _, dir := range []string{"up", "down"} {
			label := map[string]string{"up": "client → target", "down": "target → client"}[dir]
			r := tpMed("8"+dir, "burrow") / tpMed("1"+dir, "burrow")
			rows = append(rows, targetRow{"8 streams vs 1 stream, " + label, "≥ 1.0×",
				fmt.Sprintf("%.2f× (%s vs %s Gbit/s)", r, gbit(tpMed("8"+dir, "burrow")), gbit(tpMed("1"+dir, "burrow"))), r >= 1.0, "streams"})
			u := unfairness(s.tp["8"+dir]["burrow"])
			rows = append(rows, targetRow{"fair share of 8 streams, " + label, "every stream within 20% of the mean",
				fmt.Sprintf("furthest stream %.0f%% from the mean", 100*u), u <= 0.2, "streams"})
		}
	}
	if len(s.lat) > 0 {
		rtt := func(k string) float64 { return medianOf(s.lat[k].rttP50) }
		k, v := s.sshBest(rtt)
		r := rtt("burrow") / v
		rows = append(rows, targetRow{"established round trip p50", "≤ 1/3 of ssh -L's",
			fmt.Sprintf("%.2f× (%.0f µs vs %.0f µs, %s)", r, rtt("burrow"), v, s.pathLabel(k)), r <= 1.0/3, "rtt"})
		conn := func(k string) float64 { return medianOf(s.lat[k].connP50) }
		k, v = s.sshBest(conn)
		r = conn("burrow") / v
		rows = append(rows, targetRow{"new connection p50", "≤ 1/2 of ssh -L's",
			fmt.Sprintf("%.2f× (%.0f µs vs %.0f µs, %s)", r, conn("burrow"), v, s.pathLabel(k)), r <= 0.5, "connect"})
	}
	if len(s.tp) > 0 {
		worst, worstSc, ok := 0.0, "", true
		for _, sc := range tpScenarios {
			_, v := s.sshBest(func(k string) float64 { return cpuPerGiB(s.tp[sc.key][k]) })
			r := cpuPerGiB(s.tp[sc.key]["burrow"]) / v
			if r > worst {
				worst, worstSc = r, sc.label
			}
			ok = ok && r <= 0.5
		}
		rows = append(rows, targetRow{"CPU seconds per GiB, client + server", "≤ 1/2 of ssh -L's (the cheaper cipher)",
			fmt.Sprintf("%.2f× at worst (%s)", worst, worstSc), ok, "cpu"})
	}
	for _, c := range []struct {
		what   string
		cost   idleCost
		target float64
	}{{"session", s.scale.sessions, 64}, {"stream", s.scale.streams, 8}} {
		if c.cost.n == 0 {
			continue
		}
		what := fmt.Sprintf("server RSS per idle %s (%d %ss)", c.what, c.cost.n, c.what)
		if c.what == "stream" {
			what += ", one session"
		}
		after, opened := c.cost.perItem(c.cost.srvRSS[:], 2), c.cost.perItem(c.cost.srvRSS[:], 1)
		rows = append(rows, targetRow{what, fmt.Sprintf("≤ %.0f KiB", c.target),
			fmt.Sprintf("%.1f KiB once the server has run a GC (%.1f KiB right after opening them)", after, opened), after <= c.target, c.what})
	}
	if s.link != nil && len(s.link.series) > 0 {
		for _, dir := range []string{"→", "←"} {
			r := medianOf(s.link.series["burrow "+dir]) / medianOf(s.link.series["direct "+dir])
			rows = append(rows, targetRow{fmt.Sprintf("%v RTT link, 1 stream %s", s.link.rtt, dir), "≥ 80% of direct on the same link",
				fmt.Sprintf("%.0f%% (%.0f vs %.0f Mbit/s)", 100*r, medianOf(s.link.series["burrow "+dir])/1e6, medianOf(s.link.series["direct "+dir])/1e6), r >= 0.8, "link"})
		}
	}
	rows = append(rows, s.transportTargets()...)
	return append(rows, s.transferTargets()...)
}

// sourceCommit names the checked-out commit, and says so when tracked
// files differ from it. Taken when the suite starts: the suite's own
// output files differ by the time the report is written.
func sourceCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	commit := strings.TrimSpace(string(out))
	if out, _ := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); len(out) > 0 {
		commit += " (with uncommitted changes)"
	}
	return commit
}

// machine describes where the run happened.
func machine(commit string) [][2]string {
	model := "?"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	mem := "?"
	if kib, err := procStatusKiBFile("/proc/meminfo", "MemTotal"); err == nil {
		mem = fmt.Sprintf("%.1f GiB", float64(kib)/(1<<20))
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	first := func(argv ...string) string {
		out, _ := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return line
	}
	return [][2]string{
		{"cores", fmt.Sprint(runtime.NumCPU())},
		{"CPU", model},
		{"memory", mem},
		{"kernel", strings.TrimSpace(string(kernel)) + " " + runtime.GOARCH},
		{"Go", runtime.Version()},
		{"OpenSSH", first("ssh", "-V")},
		{"iperf3", first("iperf3", "--version")},
		{"commit", commit},
	}
}

func procStatusKiBFile(path, field string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			var kib int64
			_, err := fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kib)
			return kib, err
		}
	}
	return 0, fmt.Errorf("%s has no %s", path, field)
}

func (s *suite) write() error {
	if err := os.MkdirAll(s.out, 0o755); err != nil {
		return err
	}
	if err := s.chart(filepath.Join(s.out, s.chartName())); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	took := time.Since(s.started).Round(time.Second)

	p("# Benchmarks\n\n")
	p("Generated by `make bench` on %s in %v; do not edit by hand (the text comes from\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), took)
	p("`integration/bench/*_test.go`). Burrow is measured side by side with its baselines in the\n")
	p("same run: each measurement is repeated %d times (the 1 GiB transfer %d), interleaved with the baselines' and with\n", s.reps, s.reps+xferLargeExtra)
	p("the order of the paths rotated, and the **median** is reported. Ratios compare figures of\n")
	p("this one run.\n\n")

	p("## Machine\n\n| | |\n|---|---|\n")
	for _, kv := range machine(s.commit) {
		p("| %s | %s |\n", kv[0], kv[1])
	}
	p("| load average (1, 5, 15 min) | %s at the start, %s at the end |\n", s.loadAvg[0], s.loadAvg[1])
	p("| open files limit | %d |\n\n", s.noFile)
	p("Everything runs on this one machine: iperf3, sshd and ssh, and both burrow processes\n")
	p("share its cores, as do the harness's own targets. A load average near or above the\n")
	p("number of cores means other work ran beside the benchmark and the absolute figures are\n")
	p("low and noisy; the ratios, measured interleaved, are the figures to read. The load average\n")
	p("counts the benchmark's own processes too (a throughput run keeps four of them busy): the\n")
	p("table under [Commands](#commands) gives it at the start of each section.\n\n")
	if len(s.skipped) > 0 {
		p("**Skipped** (time budget %v): %s.\n\n", s.budget, strings.Join(s.skipped, "; "))
	}
	if len(s.cut) > 0 {
		p("**Fewer repetitions** (time budget %v): %s.\n\n", s.budget, strings.Join(s.cut, "; "))
	}
	if len(s.retries) > 0 {
		p("**Retried**: %d iperf3 run(s) failed and were run again: %s.\n\n", len(s.retries), strings.Join(s.retries, "; "))
	}

	p("## Targets\n\n| what | target | measured | |\n|---|---|---|---|\n")
	gaps := 0
	rows := s.targets()
	for _, r := range rows {
		p("| %s | %s | %s | %s |\n", r.what, r.target, r.measured, verdict(r.ok))
		if !r.ok {
			gaps++
		}
	}
	p("\n![throughput, latency and the long link](%s)\n\n", s.chartName())
	if gaps > 0 {
		s.writeGaps(&b, rows)
	}

	if len(s.tp) > 0 {
		p("## Throughput\n\n")
		p("iperf3 through a local forward to `iperf3 -s` on loopback, %d s per run, Gbit/s at the\n", s.secs)
		p("receiver (median of %d). `client → target` is iperf3's default direction (the data enters\n", s.reps)
		p("the forward's local port), `target → client` is `-R`.\n\n")
		p("| scenario |")
		for _, pa := range s.paths {
			p(" %s |", pa.label)
		}
		p(" burrow / direct | burrow / ssh aes128-gcm |\n|---|")
		for range s.paths {
			p("---|")
		}
		p("---|---|\n")
		for _, sc := range tpScenarios {
			p("| %s |", sc.label)
			for _, pa := range s.paths {
				p(" %s |", gbit(medianOf(runsBps(s.tp[sc.key][pa.key]))))
			}
			bur := medianOf(runsBps(s.tp[sc.key]["burrow"]))
			p(" %.0f%% | %.2f× |\n", 100*bur/medianOf(runsBps(s.tp[sc.key]["direct"])), bur/medianOf(runsBps(s.tp[sc.key]["ssh-aes"])))
		}
		p("\nFair share with 8 parallel streams: the stream furthest from the mean of its run, as a\nfraction of the mean (median of runs):\n\n| scenario |")
		for _, pa := range s.paths {
			p(" %s |", pa.label)
		}
		p("\n|---|")
		for range s.paths {
			p("---|")
		}
		p("\n")
		for _, sc := range tpScenarios[2:] {
			p("| %s |", sc.label)
			for _, pa := range s.paths {
				p(" %.0f%% |", 100*unfairness(s.tp[sc.key][pa.key]))
			}
			p("\n")
		}
		p("\n")
	}

	if len(s.lat) > 0 {
		p("## Latency\n\n")
		p("An in-process echo target behind each path. *Round trip*: 64 bytes written and read back\n")
		p("on an established connection (after %d warm-ups). *New connection*: connect to the forward,\n", latencyWarm)
		p("one 64-byte round trip, close. Each repetition makes %d rounds over the paths, each round %d\n", latencyRounds, latencyRTTs)
		p("round trips and %d new connections per path, so that load coming and going falls on every\n", latencyConns)
		p("path alike. Microseconds, median over %d repetitions of each percentile. The CPU columns are\n", s.reps)
		p("the CPU time of the tunnel's processes (both ends, as in [Efficiency](#efficiency)) per round\n")
		p("trip and per new connection.\n\n")
		p("On a virtual machine these figures depend on how busy the machine is: a vCPU with nothing to\n")
		p("run halts, and waking the relay process that a message is for then goes through the\n")
		p("hypervisor. Outside this run, with two shell busy-loops keeping both vCPUs awake, the same\n")
		p("measurement gave round trips of 115 µs through burrow and 68 µs through ssh -L, against 303\n")
		p("and 211 µs right after on the idle machine; direct loopback, within one process, stayed at\n")
		p("6 µs. Read the ratios, measured side by side, rather than the microseconds.\n\n")
		p("| path | round trip p50 | round trip p99 | new connection p50 | new connection p99 | CPU per round trip | CPU per new connection |\n|---|---|---|---|---|---|---|\n")
		for _, pa := range s.paths {
			l := s.lat[pa.key]
			cpu := func(v []float64) string {
				if pa.key == "direct" {
					return "–"
				}
				return fmt.Sprintf("%.0f", medianOf(v))
			}
			p("| %s | %.0f | %.0f | %.0f | %.0f | %s | %s |\n", pa.label, medianOf(l.rttP50), medianOf(l.rttP99), medianOf(l.connP50), medianOf(l.connP99), cpu(l.cpuRTT), cpu(l.cpuConn))
		}
		p("\n")
	}

	if len(s.tp) > 0 {
		p("## Efficiency\n\n")
		p("CPU seconds (user + system, `/proc/PID/stat`) used by the tunnel's two ends during each\n")
		p("throughput run, per GiB received (median of runs). burrow: the client and the server\n")
		p("process. ssh: the `ssh -L` process and everything under its `sshd` (the listener and the\n")
		p("connection's privilege-separated processes). iperf3's own CPU is not counted.\n\n")
		p("| scenario |")
		for _, pa := range s.paths[1:] {
			p(" %s |", pa.label)
		}
		p(" burrow client / server |\n|---|")
		for range s.paths[1:] {
			p("---|")
		}
		p("---|\n")
		for _, sc := range tpScenarios {
			p("| %s |", sc.label)
			for _, pa := range s.paths[1:] {
				p(" %.2f |", cpuPerGiB(s.tp[sc.key][pa.key]))
			}
			c, sv := cpuSplit(s.tp[sc.key]["burrow"])
			p(" %.2f / %.2f |\n", c, sv)
		}
		p("\nPeak resident memory (`VmHWM`) after all the throughput runs, MiB:\n\n| path | client | server |\n|---|---|---|\n")
		for _, pa := range s.paths[1:] {
			h := s.hwm[pa.key]
			p("| %s | %.1f | %.1f |\n", pa.label, float64(h[0])/1024, float64(h[1])/1024)
		}
		p("\nsshd's figure is the sum of its listener and the connection's processes. burrow's is mostly\n")
		p("stream receive buffers: when the local reader (here iperf3, short of CPU) falls behind, each\n")
		p("stream may buffer up to its window (`--stream-window`, %d MiB by default), which the\n", mux.DefaultStreamWindow>>20)
		p("8-stream runs fill.\n\n")
	}

	if s.scale.sessions.n > 0 || s.scale.streams.n > 0 || len(s.scale.tpAlone) > 0 {
		s.writeScale(&b)
	}

	if l := s.link; l != nil && len(l.series) > 0 {
		p("## A long link\n\n")
		p("A simulated link of %v round trip and %.0f Mbit/s between the burrow client and\n", l.rtt, l.rateMbit)
		p("server, and between iperf3 and its server for the direct baseline: %s.\n", l.how)
		if os.Getenv("BENCH_LINK_QDISC") != "" && l.why == "" {
			p("(BENCH_LINK_QDISC replaced the default netem settings: the round trip and rate stated here are not what the link had.)\n")
		}
		if l.why != "" {
			p("Network namespaces with netem were not used: %s.\n", strings.TrimRight(l.why, ". "))
		}
		p("One stream, %d s after %d s omitted (slow start), Mbit/s, median of %d. Beside the defaults,\n", linkSecs, linkOmit, s.reps)
		p("a client whose receive window is cut to 1 MiB (one stream cannot go faster than window / RTT,\n")
		p("%.0f Mbit/s here: the window is what limits a long link), and a server and client with\n", float64(1<<20)*8/l.rtt.Seconds()/1e6)
		p("the other window size. yamux (v0.1.2, `Stream.sendWindowUpdate`) grants new credit only once half\n")
		p("of the window has been read, so a sender may count on about three quarters of the window\n")
		p("on average: to fill this link's bandwidth-delay product (%.2f MB) a stream needs a window of\n", l.rateMbit*1e6/8*l.rtt.Seconds()/1e6)
		p("at least %.1f MB, more with any queueing or processing delay on the way; the default is %d MiB.\n\n", l.rateMbit*1e6/8*l.rtt.Seconds()/1e6*4/3, mux.DefaultStreamWindow>>20)
		p("| path | Mbit/s | vs direct |\n|---|---|---|\n")
		for _, k := range l.order {
			dir := k[strings.LastIndex(k, " ")+1:]
			p("| %s | %.0f | %.0f%% |\n", k, medianOf(l.series[k])/1e6, 100*medianOf(l.series[k])/medianOf(l.series["direct "+dir]))
		}
		p("\nHow the link was made:\n\n```sh\n%s\n```\n\n", strings.Join(l.setup, "\n"))
	}

	if s.trans != nil || len(s.idle) > 0 {
		s.writeTransports(&b)
	}

	if s.xfer != nil {
		s.writeTransfers(&b)
	}

	if len(s.gobench) > 0 {
		d, f := medianOf(s.gobench["direct"]), medianOf(s.gobench["forward"])
		p("## Go benchmarks\n\n")
		p("One connection, 1 MiB writes, to an in-process sink that answers with the byte count\n")
		p("once it has read everything (the time includes delivery): through the binaries'\n")
		p("forward, and over plain loopback TCP, %d runs each, interleaved (`testing.Benchmark` in\n", s.reps)
		p("the suite). The same benchmarks on their own:\n\n")
		p("```sh\ngo test -tags bench -run '^$' -bench 'ForwardThroughput|DirectThroughput' -count 5 ./integration/bench/\n```\n\n")
		p("| benchmark | MB/s (median) | vs direct |\n|---|---|---|\n")
		p("| BenchmarkDirectThroughput/1MiB (plain loopback TCP) | %.0f | 1.00 |\n", d)
		p("| BenchmarkForwardThroughput/1MiB (burrow client → server → sink) | %.0f | %.2f |\n\n", f, f/d)
		if len(s.muxBench) > 0 {
			p("The `mux` package's benchmarks: one stream of a tunnel as the binaries run it (yamux over\n")
			p("WebSocket over TLS, writes coalesced above and below TLS, both ends in one process, on\n")
			p("loopback), 1 MiB and 64-byte writes, and 64-byte writes on 16 streams at once\n")
			p("(`SmallWritesStreams`: frames queued behind each other share a message), against one TLS\n")
			p("connection and plain TCP; medians of 3, bytes and allocations per write (`-benchmem`).\n")
			p("burrow's own data path allocates nothing per message (buffers come from pools); the\n")
			p("allocations counted are yamux's (a send request per write, a reader per frame received)\n")
			p("and crypto/tls's (a reader per record read):\n\n")
			p("```sh\ngo %s ./mux/\n```\n\n", shellLine(muxBenchArgs))
			p("| benchmark | MB/s | B/op | allocs/op |\n|---|---|---|---|\n")
			for _, mb := range s.muxBench {
				p("| %s | %.0f | %.0f | %.0f |\n", mb.name, medianOf(mb.mbs), medianOf(mb.bytesOp), medianOf(mb.alloc))
			}
			p("\n")
		}
	}

	if s.prof != nil {
		s.writeProfile(&b)
	}

	p("## Commands\n\n")
	p("```sh\nmake bench   # = bash .ci/deps.sh, then:\ngo test -tags bench -run '^TestBenchSuite$' -count=1 -timeout 25m -v ./integration/bench/\n```\n\n")
	p("Environment: `BENCH_REPEAT` (default 3), `BENCH_SECONDS` per iperf3 run (2), `BENCH_LINK=proxy`\n")
	p("(skip the network namespaces), `BENCH_LINK_QDISC`, `BENCH_BUDGET` (20m), `BENCH_OUT`, `BENCH_ONLY`,\n")
	p("`BENCH_PROFILES=DIR` to keep the profiles, `BENCH_CHART=png`. What the harness ran (ports\nare random, `$TMP` is a temporary directory):\n\n```sh\n")
	for _, c := range s.commands {
		p("%s\n", c)
	}
	p("```\n\n| section | time | 1-minute load average at its start |\n|---|---|---|\n")
	for _, st := range s.sections {
		p("| %s | %v | %s |\n", st.name, st.took.Round(time.Second), st.load)
	}
	p("| total | %v | (plus building the binary and `make deps`) |\n", took)

	path := filepath.Join(s.out, "benchmarks.md")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (s *suite) writeScale(b *strings.Builder) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	ss, st := s.scale.sessions, s.scale.streams
	p("## Scale\n\n")
	p("Fresh servers (users file with a bcrypt hash: one argon2id check allocates 19 MiB, which the\n")
	p("heap would keep and reuse for sessions and streams, hiding their cost). Ten items are opened\n")
	p("first, so that what they all share exists, then the measured ones. The server's `VmRSS` is\n")
	p("read once it stops moving: before, right after opening, and after the server ran a garbage\n")
	p("collection (`GET /debug/pprof/heap?gc=1` on its admin listener) with everything still\n")
	p("open, which is where an idle server settles (Go collects at least every two minutes).\n")
	p("Right after opening, the heap still holds what opening used: the 64 KiB copy buffers each\n")
	p("direction of a new stream takes for its first bytes and gives back to a pool 200 ms later,\n")
	p("goroutine stacks grown on the way, TLS handshake state.\n\n")
	if ss.n > 0 {
		p("**Idle sessions.** %d sessions opened in the harness with the `client` package the binary uses\n", ss.n)
		p("(%.0f per second, %d at a time), with `--max-sessions-per-user 2000` on the server.\n\n", float64(ss.n)/ss.took.Seconds(), ss.workers)
	}
	if st.n > 0 {
		p("**Idle streams.** A `burrow client` with one forward to a helper process that answers each\n")
		p("connection's first byte and then holds it open; %d connections through the forward, each\n", st.n)
		p("confirmed by its one-byte round trip (%.0f per second, %d at a time), then left idle.\n", float64(st.n)/st.took.Seconds(), st.workers)
		p("The server parks a stream's directions once they have been idle for 200 ms: no goroutine\n")
		p("waits for an idle stream (`relay.Parking`).\n\n")
	}
	p(idleRSSHeader)
	if ss.n > 0 {
		p("%s", ss.rssRow(fmt.Sprintf("server, %d idle sessions", ss.n)))
	}
	if st.n > 0 {
		p("%s", st.rssRow(fmt.Sprintf("server, %d idle streams", st.n)))
		p("| client, %d idle streams | %s | %s | %.1f KiB | | |\n", st.n, mib(st.cliRSS[0]), mib(st.cliRSS[1]), st.perItem(st.cliRSS[:], 1))
	}
	p("\nWhere the server's memory goes, from its Go metrics (`/metrics`) after the GC, per item:\n\n")
	p(idleMetricsHeader)
	p("%s%s\n", ss.metricsRow("session"), st.metricsRow("stream"))
	p("%s%s", ss.heapTable("idle sessions"), st.heapTable("idle streams"))
	if len(s.scale.tpAlone) > 0 {
		a, w := medianOf(s.scale.tpAlone), medianOf(s.scale.tpWithOthers)
		p("**One stream among many.** iperf3, 1 stream, client → target, through the main\n")
		p("tunnel alone and right after %d other connections were opened on the same session and\n", s.scale.others)
		p("left idle (alternated, %d times each): %s Gbit/s alone, %s Gbit/s beside %d idle\n", s.reps, gbit(a), gbit(w), s.scale.others)
		p("streams (**%.0f%%**).\n\n", 100*w/a)
	}
}

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

const idleRSSHeader = "| | VmRSS before | right after opening | per item | after a GC | **per item** |\n|---|---|---|---|---|---|\n"

// rssRow is the server's line of idleRSSHeader's table.
func (c idleCost) rssRow(label string) string {
	return fmt.Sprintf("| %s | %s | %s | %.1f KiB | %s | **%.1f KiB** |\n", label, mib(c.srvRSS[0]), mib(c.srvRSS[1]), c.perItem(c.srvRSS[:], 1), mib(c.srvRSS[2]), c.perItem(c.srvRSS[:], 2))
}

const idleMetricsHeader = "| per idle … | goroutines | heap in use | goroutine stacks | heap + stacks | VmRSS |\n|---|---|---|---|---|---|\n"

// metricsRow is a line of idleMetricsHeader's table: the server's Go
// metrics after the GC, per item; "" when they were not read.
func (c idleCost) metricsRow(what string) string {
	if c.n == 0 || c.metrics[2] == nil {
		return ""
	}
	heap, stack := c.metricPerItem("go_memstats_heap_inuse_bytes")/1024, c.metricPerItem("go_memstats_stack_inuse_bytes")/1024
	return fmt.Sprintf("| %s | %.1f | %.1f KiB | %.1f KiB | %.1f KiB | %.1f KiB |\n", what, c.metricPerItem("go_goroutines"), heap, stack, heap+stack, c.perItem(c.srvRSS[:], 2))
}

// heapTable is the top of the server's heap profile with everything
// open; "" without one.
func (c idleCost) heapTable(what string) string {
	if len(c.heap.lines) == 0 {
		return ""
	}
	total := c.heap.header
	if i := strings.LastIndex(total, " of "); i >= 0 {
		total = total[i+4:]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Server heap with %d %s open, after the GC (`/debug/pprof/heap`, in-use space as sampled, %s):\n\n| flat | cum | allocated in |\n|---|---|---|\n", c.n, what, total)
	for _, l := range c.heap.lines[:min(8, len(c.heap.lines))] {
		fmt.Fprintf(&b, "| %.1f%% | %.1f%% | `%s` |\n", l.flatPct, l.cumPct, l.name)
	}
	b.WriteString("\n")
	return b.String()
}

func (s *suite) writeProfile(b *strings.Builder) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	pr := s.prof
	p("## Where the time goes\n\n")
	p("CPU profiles of both ends of the tunnel, %d s each: the server binary through `--admin …\n", pr.secs)
	p("--pprof` (`/debug/pprof/profile`), the client in the harness's process (the `client` package\n")
	p("the binary runs, under `runtime/pprof`: the binary's client has no profiling listener), with\n")
	p("the main server and iperf3 of the throughput runs. Each byte crosses three loopback TCP\n")
	p("connections (iperf3 → client, client → server, server → iperf3), as with `ssh -L`, is sealed\n")
	p("once with AES-GCM (TLS 1.3) and opened once, and is framed by yamux and WebSocket (frames\n")
	p("from the client masked). While profiled:")
	for _, w := range pr.works {
		p(" %s, %s;", w.label, w.figure)
	}
	p(" all on the machine's %d cores with iperf3 or the harness's echo target beside them.\n\n", runtime.NumCPU())
	writeProfileTables(b, pr.works)
}

// writeProfileTables writes the share of each profile's samples by where
// they are spent, and the top functions of each.
func writeProfileTables(b *strings.Builder, works []*profWork) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("Share of samples by where they are spent (flat):\n\n| |")
	var tops []profileTop
	for _, w := range works {
		p(" %s: server | %s: client |", w.key, w.key)
		tops = append(tops, w.server, w.client)
	}
	p("\n|---|")
	for range tops {
		p("---|")
	}
	p("\n")
	var cats [][]float64
	for _, t := range tops {
		cats = append(cats, t.categories())
	}
	for i, c := range profileCategories {
		p("| %s |", c.name)
		for j := range tops {
			p(" %.1f%% |", cats[j][i])
		}
		p("\n")
	}
	for _, cum := range []struct{ label, fn string }{
		{"*cumulative:* garbage collector (`runtime.gcBgMarkWorker`)", "runtime.gcBgMarkWorker"},
		{"*cumulative:* allocation (`runtime.mallocgc`)", "runtime.mallocgc"},
		{"*cumulative:* scheduler finding work (`runtime.schedule`)", "runtime.schedule"},
		{"*cumulative:* goroutine stack growth (`runtime.newstack`)", "runtime.newstack"},
	} {
		p("| %s |", cum.label)
		for _, t := range tops {
			p(" %.1f%% |", t.cum(cum.fn))
		}
		p("\n")
	}
	p("| CPU used (samples / wall time) |")
	for _, t := range tops {
		h := t.header
		if i := strings.Index(h, "("); i >= 0 {
			h = strings.TrimSuffix(h[i+1:], ")")
		}
		p(" %s |", h)
	}
	p("\n\n")
	for _, w := range works {
		for _, side := range []struct {
			name string
			top  profileTop
		}{{"server", w.server}, {"client", w.client}} {
			p("<details><summary>Top functions, %s, %s (<code>go tool pprof -top</code>)</summary>\n\n| flat | cum | function |\n|---|---|---|\n", side.name, w.label)
			for _, l := range side.top.lines[:min(15, len(side.top.lines))] {
				p("| %.1f%% | %.1f%% | `%s` |\n", l.flatPct, l.cumPct, l.name)
			}
			p("\n</details>\n\n")
		}
	}
}

// ---- the chart ----

var seriesColors = []color.Color{
	color.RGBA{0x4c, 0x72, 0xb0, 0xff}, // direct: blue
	color.RGBA{0xdd, 0x84, 0x52, 0xff}, // burrow: orange
	color.RGBA{0x55, 0xa8, 0x68, 0xff}, // ssh default: green
	color.RGBA{0xc4, 0x4e, 0x52, 0xff}, // ssh aes: red
	color.RGBA{0x81, 0x72, 0xb3, 0xff},
}

// linkColors are the long link's burrow variants: defaults, 16 MiB, 1 MiB.
var linkColors = []color.Color{
	color.RGBA{0xdd, 0x84, 0x52, 0xff},
	color.RGBA{0x81, 0x72, 0xb3, 0xff},
	color.RGBA{0x93, 0x93, 0x93, 0xff},
}

// groupedBars adds one bar series per name, values[i] over the categories.
func groupedBars(p *plot.Plot, names []string, values [][]float64, colors []color.Color) error {
	w := vg.Points(9)
	top := 0.0
	for i, vals := range values {
		bars, err := plotter.NewBarChart(plotter.Values(vals), w)
		if err != nil {
			return err
		}
		bars.Color = colors[i%len(colors)]
		bars.LineStyle.Width = 0
		bars.Offset = vg.Length(float64(i)-float64(len(values)-1)/2) * w
		p.Add(bars)
		p.Legend.Add(names[i], bars)
		for _, v := range vals {
			if !math.IsNaN(v) {
				top = max(top, v)
			}
		}
	}
	p.Y.Min = 0
	p.Y.Max = top * 1.6 // room for the legend
	p.Y.Tick.Marker = stepTicks{}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	return nil
}

// stepTicks labels an axis every 1, 2 or 5 times a power of ten, about
// five labels from min to max.
type stepTicks struct{}

func (stepTicks) Ticks(lo, hi float64) []plot.Tick {
	if hi <= lo {
		return nil
	}
	raw := (hi - lo) / 5
	step := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if step*m >= raw {
			step *= m
			break
		}
	}
	decimals := max(0, int(-math.Floor(math.Log10(step))))
	var ticks []plot.Tick
	for n := math.Ceil(lo / step); n*step <= hi; n++ {
		v := n * step
		ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', decimals, 64)})
		for i := 1; i < 5; i++ {
			if m := v + step*float64(i)/5; m <= hi {
				ticks = append(ticks, plot.Tick{Value: m})
			}
		}
	}
	return ticks
}

// chartName is benchmarks.svg, or benchmarks.png with BENCH_CHART=png.
func (s *suite) chartName() string {
	if os.Getenv("BENCH_CHART") == "png" {
		return "benchmarks.png"
	}
	return "benchmarks.svg"
}

func (s *suite) chart(path string) error {
	var panels []*plot.Plot
	short := map[string]string{"direct": "direct", "burrow": "burrow", "ssh": "ssh -L (default cipher)", "ssh-aes": "ssh -L aes128-gcm"}
	if len(s.tp) > 0 {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("iperf3 on loopback (median of %d)", s.reps)
		p.Y.Label.Text = "Gbit/s"
		var names []string
		var values [][]float64
		for _, pa := range s.paths {
			names = append(names, short[pa.key])
			var v []float64
			for _, sc := range tpScenarios {
				v = append(v, medianOf(runsBps(s.tp[sc.key][pa.key]))/1e9)
			}
			values = append(values, v)
		}
		if err := groupedBars(p, names, values, seriesColors); err != nil {
			return err
		}
		p.NominalX("1 stream →", "1 stream ←", "8 streams →", "8 streams ←")
		panels = append(panels, p)
	}
	if len(s.lat) > 0 {
		p := plot.New()
		p.Title.Text = "latency, p50"
		p.Y.Label.Text = "µs"
		var names []string
		var values [][]float64
		for _, pa := range s.paths {
			names = append(names, short[pa.key])
			l := s.lat[pa.key]
			values = append(values, []float64{medianOf(l.rttP50), medianOf(l.connP50)})
		}
		if err := groupedBars(p, names, values, seriesColors); err != nil {
			return err
		}
		p.NominalX("64 B round trip", "new connection")
		panels = append(panels, p)
	}
	if l := s.link; l != nil && len(l.series) > 0 {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("1 stream over a %v RTT, %.0f Mbit/s link", l.rtt, l.rateMbit)
		p.Y.Label.Text = "Mbit/s"
		med := func(k string) float64 {
			if v, ok := l.series[k]; ok {
				return medianOf(v) / 1e6
			}
			return 0
		}
		names := []string{"direct"}
		values := [][]float64{{med("direct →"), med("direct ←")}}
		colors := []color.Color{seriesColors[0]}
		for i, v := range l.variants {
			names = append(names, v.label())
			values = append(values, []float64{med(v.label() + " →"), med(v.label() + " ←")})
			colors = append(colors, linkColors[i%len(linkColors)])
		}
		if err := groupedBars(p, names, values, colors); err != nil {
			return err
		}
		p.NominalX("client → target", "target → client")
		panels = append(panels, p)
	}
	if len(panels) == 0 {
		return nil
	}
	width, height := vg.Length(len(panels))*11*vg.Centimeter, 10*vg.Centimeter
	var c interface {
		vg.CanvasSizer
		WriteTo(io.Writer) (int64, error)
	}
	if strings.HasSuffix(path, ".png") {
		c = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(110))}
	} else {
		c = vgsvg.New(width, height)
	}
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: 1, Cols: len(panels), PadX: 6 * vg.Millimeter, PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 2 * vg.Millimeter}
	canvases := plot.Align([][]*plot.Plot{panels}, tiles, dc)
	for i, p := range panels {
		p.Draw(canvases[0][i])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

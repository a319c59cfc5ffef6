//go:build bench

package bench

import (
	"fmt"
	"math"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/burrowtun/burrow/client"
	"github.com/burrowtun/burrow/httpconn"
	"github.com/burrowtun/burrow/mux"
)

// The transports beneath the session (burrow client --transport): each
// forced on a client of its own, against WebSocket measured in the same
// run, on loopback and across the long link.

// transportKeys are the compared transports as --transport names them,
// the baseline first.
var transportKeys = []string{"websocket", "stream", "poll"}

var transportLabels = map[string]string{"websocket": "WebSocket", "stream": "HTTP streaming", "poll": "HTTP polling"}

// Round trips on loopback and across the link: rounds × round trips per
// repetition, after warm-ups; the link's are fewer, each taking an RTT.
const (
	trLoopRounds, trLoopRTTs, trLoopWarm = 5, 100, 20
	trLinkRounds, trLinkRTTs, trLinkWarm = 2, 25, 3
)

// transportEnv is where the transports are compared: loopback, or the
// long link.
type transportEnv struct {
	key, label string
	paths      []*tpath // one per transport, keyed by its name
	secs, omit int      // of each iperf3 run
	tp         map[string]map[string][]tpRun
	lat        map[string]*latRuns
	hwm        map[string][2]int64  // client, server VmHWM KiB after the runs
	rss        map[string][2]int64  // client, server VmRSS KiB after the runs
	afterIdle  map[string][]float64 // ms, one per repetition
	setup      []string
}

type transportResult struct {
	envs    []*transportEnv
	idleFor time.Duration // before afterIdle's round trip
	linkRTT time.Duration
	prof    []*profWork // stream and poll on loopback, each way
}

// env returns the environment with key, or nil.
func (r *transportResult) env(key string) *transportEnv {
	if r == nil {
		return nil
	}
	for _, e := range r.envs {
		if e.key == key {
			return e
		}
	}
	return nil
}

func (s *suite) transports() {
	t := s.t
	ll := s.longLinkEnv()
	r := &transportResult{linkRTT: ll.rtt, idleFor: httpconn.DefaultHold + 2*time.Second}
	s.trans = r
	loop := &transportEnv{key: "loopback", label: "loopback", secs: s.secs}
	link := &transportEnv{key: "link", label: fmt.Sprintf("%v RTT link", ll.rtt), secs: linkSecs, omit: linkOmit}
	iperfAddr := fmt.Sprintf("127.0.0.1:%d", s.iperf.port)
	servers := map[string]*benchServer{}
	for _, tr := range transportKeys {
		flags := []string{"--transport", tr}
		srv := startBenchServer(t, tr+" server", "", s.creds, "127.0.0.1:0")
		servers[tr] = srv
		cli, locals := startBenchClient(t, tr+" client", "", srv.url(), s.creds, flags, "127.0.0.1:0:"+iperfAddr, "127.0.0.1:0:"+s.echo)
		loop.setup = append(loop.setup, shellLine(srv.argv), shellLine(cli.argv))
		loop.paths = append(loop.paths, s.transportPath(tr, "", srv, cli, locals))

		lsrv, lcli, locals, lines := ll.tunnel(t, "link "+tr, nil, flags, "127.0.0.1:0:"+ll.iperf, "127.0.0.1:0:"+ll.echo)
		link.setup = append(link.setup, lines...)
		link.paths = append(link.paths, s.transportPath(tr, ll.clientNS(), lsrv, lcli, locals))
	}
	r.envs = []*transportEnv{loop, link}
	scenarios := tpScenarios[:2] // one stream, each way
	for _, e := range r.envs {
		e.tp = s.measureThroughput("transports, "+e.label, e.paths, scenarios, e.secs, e.omit)
		e.hwm, e.rss = map[string][2]int64{}, map[string][2]int64{}
		for _, p := range e.paths {
			e.hwm[p.key] = [2]int64{statusOf(p.clientPIDs(), "VmHWM"), statusOf(p.serverPIDs(), "VmHWM")}
			e.rss[p.key] = [2]int64{statusOf(p.clientPIDs(), "VmRSS"), statusOf(p.serverPIDs(), "VmRSS")}
		}
	}
	loop.lat = s.measureLatency(loop.paths, trLoopRounds, trLoopRTTs, 0, trLoopWarm)
	link.lat = s.measureLatency(link.paths, trLinkRounds, trLinkRTTs, 0, trLinkWarm)
	s.roundTripAfterIdle(r)
	for _, tr := range []string{"stream", "poll"} {
		r.prof = append(r.prof, s.profileTransport(servers[tr], tr, iperfAddr)...)
	}
}

// trProfileSecs is the length of each transport's profiles.
const trProfileSecs = 5

// profileTransport profiles both ends of a tunnel over transport tr on
// loopback, srv and the client package in this process, during a
// one-stream iperf3 each way.
func (s *suite) profileTransport(srv *benchServer, tr, iperfAddr string) []*profWork {
	transport, err := client.ParseTransport(tr)
	if err != nil {
		s.t.Fatal(err)
	}
	locals, stop, err := inProcessClient(s.ctx, srv, transport, "127.0.0.1:0:"+iperfAddr)
	if err != nil {
		s.t.Fatal(err)
	}
	defer stop()
	path := &tpath{iperf: locals[0]}
	host, port := path.iperfPort()
	var works []*profWork
	for _, sc := range tpScenarios[:2] {
		dir := map[bool]string{false: "upload", true: "download"}[sc.reverse]
		works = append(works, s.profileWork(srv, trProfileSecs, tr+" "+dir, transportLabels[tr]+", "+sc.label, func() (string, error) {
			r, err := runIperf("", host, port, 1, sc.reverse, trProfileSecs, 0)
			return fmt.Sprintf("%.0f Mbit/s", r.bps/1e6), err
		}))
	}
	return works
}

// transportPath is the path through one transport's server and client,
// whose forwards are to iperf3 -s and the echo target.
func (s *suite) transportPath(tr, ns string, srv *benchServer, cli *bproc, locals []string) *tpath {
	return &tpath{key: tr, label: transportLabels[tr], ns: ns, iperf: locals[0], echo: locals[1],
		clientPIDs: func() []int { return []int{cli.pid()} }, serverPIDs: func() []int { return []int{srv.pid()} }}
}

// roundTripAfterIdle opens a connection through every path, makes one
// round trip, leaves them all idle past the server's hold of a poll, and
// times one round trip on each: what a person back at an interactive
// session waits for first. Once per repetition, the order of the round
// trips rotated.
func (s *suite) roundTripAfterIdle(r *transportResult) {
	for _, e := range r.envs {
		e.afterIdle = map[string][]float64{}
	}
	for rep := range s.reps {
		if s.outOfTime("round trips after idling", rep, s.reps) {
			break
		}
		s.afterIdleOnce(r, rep)
	}
}

func (s *suite) afterIdleOnce(r *transportResult, rep int) {
	type open struct {
		env  *transportEnv
		path *tpath
		conn net.Conn
	}
	var conns []open
	defer func() {
		for _, o := range conns {
			o.conn.Close()
		}
	}()
	for _, e := range r.envs {
		for _, p := range e.paths {
			c, err := p.dialEcho()
			if err != nil {
				s.t.Fatalf("%s, %s: %v", e.label, p.label, err)
			}
			conns = append(conns, open{e, p, c})
			c.SetDeadline(time.Now().Add(r.idleFor + 2*time.Minute))
			if _, err := rttOn(c, 1); err != nil {
				s.t.Fatalf("%s, %s: round trip: %v", e.label, p.label, err)
			}
		}
	}
	time.Sleep(r.idleFor)
	for _, o := range rotate(conns, rep) {
		d, err := rttOn(o.conn, 1)
		if err != nil {
			s.t.Fatalf("%s, %s: round trip after %v idle: %v", o.env.label, o.path.label, r.idleFor, err)
		}
		o.env.afterIdle[o.path.key] = append(o.env.afterIdle[o.path.key], ms(d[0]))
		s.t.Logf("rep %d %s %-10s round trip after %v idle: %v", rep+1, o.env.key, o.path.key, r.idleFor, d[0].Round(time.Microsecond))
	}
}

// Idle sessions over each transport, one burrow client process per
// session: idleClients of them, started idleBatch at a time.
const idleClients, idleBatch = 1000, 50

// idleTransports are the transports whose idle sessions are measured,
// each against a fresh server.
var idleTransports = []string{"websocket", "poll"}

// idleTransport is what idle sessions over one transport cost.
type idleTransport struct {
	transport string
	cost      idleCost
	clientRSS [2]int64 // VmRSS and RssAnon (its own pages) of one client process, KiB (the mean)
	fds       [2]int   // the server's open files with the first 10 sessions, and with all
}

func (s *suite) idleSessions() {
	t := s.t
	creds := withCheapHash(t, newBenchCreds(t, "127.0.0.1"))
	for _, tr := range idleTransports {
		srv := startBenchServer(t, tr+" sessions server", "", creds, "127.0.0.1:0", "--max-sessions-per-user", "2000")
		it := idleTransport{transport: tr}
		it.cost = s.measureIdle(srv, nil, idleClients, idleBatch, "server-"+tr+"-clients", func(n, batch int) (func(), error) {
			procs := s.startIdleClients(srv, tr, n, batch)
			if n < idleClients {
				it.fds[0] = openFiles(srv.pid())
			} else {
				it.fds[1] = openFiles(srv.pid())
				var pids []int
				for _, p := range procs {
					pids = append(pids, p.pid())
				}
				it.clientRSS = [2]int64{statusOf(pids, "VmRSS") / int64(len(pids)), statusOf(pids, "RssAnon") / int64(len(pids))}
			}
			return func() {
				for _, p := range procs {
					p.stop(t)
				}
			}, nil
		})
		srv.stop(t)
		s.idle = append(s.idle, it)
		s.t.Logf("%d idle %s sessions: %.1f KiB each after a GC, client processes %d KiB each (%d KiB anonymous)", idleClients, tr, it.cost.perItem(it.cost.srvRSS[:], 2), it.clientRSS[0], it.clientRSS[1])
	}
	s.commands = append(s.commands, fmt.Sprintf("# idle sessions: a fresh server each (as for scale), then %d of this, %d at a time, with --transport websocket and then poll:", idleClients, idleBatch),
		shellLine([]string{"BURROW_AUTH=" + benchUser + ":…", "bin/burrow", "client", "--fingerprint", creds.fingerprint, "--transport", "poll", "wss://127.0.0.1:PORT", "127.0.0.1:0:" + s.holder}))
}

// startIdleClients starts n burrow client processes with one session each
// over transport tr, batch at a time, each waited for until connected,
// with a forward that nothing uses.
func (s *suite) startIdleClients(srv *benchServer, tr string, n, batch int) []*bproc {
	procs := make([]*bproc, 0, n)
	for len(procs) < n {
		start := len(procs)
		for i := start; i < min(n, start+batch); i++ {
			procs = append(procs, launchBenchClient(s.t, fmt.Sprintf("%s idle client %d", tr, i), "", srv.url(), srv.creds,
				[]string{"--transport", tr}, "127.0.0.1:0:"+s.holder))
		}
		for _, p := range procs[start:] {
			p.clientReady(s.t, 1)
		}
	}
	return procs
}

// ---- the report ----

func (e *transportEnv) tpMed(sc, tr string) float64 { return medianOf(runsBps(e.tp[sc][tr])) }

func (e *transportEnv) rttMed(tr string) (p50, p99 float64) {
	l := e.lat[tr]
	if l == nil {
		return math.NaN(), math.NaN()
	}
	return medianOf(l.rttP50) / 1000, medianOf(l.rttP99) / 1000
}

// tpRatio is "→ 21% (680 vs 3190 Mbit/s), ← 52% (…)" for transport tr
// against WebSocket, and whether both are at least min.
func (e *transportEnv) tpRatio(tr string, least float64) (string, bool) {
	var parts []string
	ok := true
	for _, sc := range tpScenarios[:2] {
		v, ws := e.tpMed(sc.key, tr), e.tpMed(sc.key, "websocket")
		parts = append(parts, fmt.Sprintf("%s %.0f%% (%.0f vs %.0f Mbit/s)", arrow(sc), 100*v/ws, v/1e6, ws/1e6))
		ok = ok && v/ws >= least
	}
	return strings.Join(parts, ", "), ok
}

func arrow(sc scenario) string {
	if sc.reverse {
		return "←"
	}
	return "→"
}

func (s *suite) transportTargets() []targetRow {
	r := s.trans
	if r == nil {
		return nil
	}
	var rows []targetRow
	for _, e := range r.envs {
		if len(e.tp) == 0 || len(e.lat) == 0 {
			continue
		}
		m, ok := e.tpRatio("stream", 0.7)
		rows = append(rows, targetRow{"HTTP streaming, 1-stream throughput, " + e.label, "≥ 70% of WebSocket's", m, ok, "transports"})
		st, _ := e.rttMed("stream")
		ws, _ := e.rttMed("websocket")
		rows = append(rows, targetRow{"HTTP streaming, round trip p50, " + e.label, "≤ 1.5× WebSocket's",
			fmt.Sprintf("%.2f× (%.2f vs %.2f ms)", st/ws, st, ws), st/ws <= 1.5, "transports"})
	}
	if e := r.env("link"); e != nil && len(e.tp) > 0 && len(e.lat) > 0 {
		var parts []string
		ok := true
		for _, sc := range tpScenarios[:2] {
			v := e.tpMed(sc.key, "poll")
			parts = append(parts, fmt.Sprintf("%s %.0f Mbit/s", arrow(sc), v/1e6))
			ok = ok && v >= 50e6
		}
		rows = append(rows, targetRow{"HTTP polling, 1-stream throughput, " + e.label, "≥ 50 Mbit/s", strings.Join(parts, ", "), ok, "transports"})
		p50, p99 := e.rttMed("poll")
		bound := 2 * r.linkRTT
		rows = append(rows, targetRow{"HTTP polling, interactive round trip p50, " + e.label, fmt.Sprintf("≤ 2× the link's RTT (%v)", bound),
			fmt.Sprintf("%.1f ms (p99 %.1f ms)", p50, p99), p50 <= ms(bound), "transports"})
		if v := e.afterIdle["poll"]; len(v) > 0 {
			bound += httpconn.DefaultHold
			rows = append(rows, targetRow{fmt.Sprintf("HTTP polling, first round trip after %v idle, %s", r.idleFor, e.label),
				fmt.Sprintf("≤ 2× the link's RTT + the server's hold (%v)", bound), fmt.Sprintf("%.1f ms (median of %d; at most %.1f ms)", medianOf(v), len(v), slices.Max(v)),
				medianOf(v) <= ms(bound), "transports"})
		}
	}
	return rows
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (s *suite) writeTransports(b *strings.Builder) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	r := s.trans
	p("## Transports\n\n")
	if r == nil {
		s.writeIdleTransports(b)
		return
	}
	p("The session over each transport beneath it, forced with `burrow client --transport`: WebSocket\n")
	p("(the default's first choice and the baseline of the ratios), HTTP streaming (two long requests,\n")
	p("one each way) and HTTP polling (short whole requests, each held by the server up to %v while\n", httpconn.DefaultHold)
	p("there is nothing to send), package `httpconn`. Each transport has a server and a client of its\n")
	p("own, so that the CPU and memory figures are its own, with forwards to iperf3 -s and an echo\n")
	p("target; on loopback, and across the %v RTT link of [A long link](#a-long-link) (the server and\n", r.linkRTT)
	p("its targets behind it, the client and iperf3 -c before it): %s. Throughput: iperf3, one stream,\n", s.linkEnv.how)
	if e := r.env("link"); e != nil {
		p("%d s per run on loopback and %d s after %d s omitted across the link, Mbit/s at the receiver;\n", r.env("loopback").secs, e.secs, e.omit)
	}
	p("CPU: the client's and the server's CPU time during those runs, per GiB received. Round trips:\n")
	p("64 bytes written and read back on an open connection, %d rounds of %d per repetition on\n", trLoopRounds, trLoopRTTs)
	p("loopback and %d of %d across the link, the paths rotated. Memory: `VmHWM` (peak) and `VmRSS`\n", trLinkRounds, trLinkRTTs)
	p("of each process after the throughput runs. Medians of %d.\n\n", s.reps)
	for _, e := range r.envs {
		if len(e.tp) == 0 {
			continue
		}
		p("**%s.**\n\n", strings.ToUpper(e.label[:1])+e.label[1:])
		p("| transport | 1 stream → Mbit/s | vs WebSocket | 1 stream ← Mbit/s | vs WebSocket | CPU s/GiB → | vs WebSocket | CPU s/GiB ← | vs WebSocket |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, tr := range transportKeys {
			p("| %s |", transportLabels[tr])
			for _, sc := range tpScenarios[:2] {
				v := e.tpMed(sc.key, tr)
				p(" %.0f | %.0f%% |", v/1e6, 100*v/e.tpMed(sc.key, "websocket"))
			}
			for _, sc := range tpScenarios[:2] {
				c := cpuPerGiB(e.tp[sc.key][tr])
				p(" %.2f | %.2f× |", c, c/cpuPerGiB(e.tp[sc.key]["websocket"]))
			}
			p("\n")
		}
		p("\n| transport | round trip p50 ms | vs WebSocket | p99 ms | after %v idle ms | VmHWM client / server MiB | vs WebSocket | VmRSS client / server MiB |\n|---|---|---|---|---|---|---|---|\n", r.idleFor)
		ws50, _ := e.rttMed("websocket")
		wsHWM := e.hwm["websocket"][0] + e.hwm["websocket"][1]
		for _, tr := range transportKeys {
			p50, p99 := e.rttMed(tr)
			idle := "–"
			if v := e.afterIdle[tr]; len(v) > 0 {
				idle = fmt.Sprintf("%.2f (at most %.2f)", medianOf(v), slices.Max(v))
			}
			h, rss := e.hwm[tr], e.rss[tr]
			p("| %s | %.2f | %.2f× | %.2f | %s | %.1f / %.1f | %.2f× | %.1f / %.1f |\n", transportLabels[tr], p50, p50/ws50, p99, idle,
				float64(h[0])/1024, float64(h[1])/1024, float64(h[0]+h[1])/float64(wsHWM), float64(rss[0])/1024, float64(rss[1])/1024)
		}
		p("\n")
	}
	p("*After %v idle*: one connection through each path, one round trip, then nothing for %v (longer\n", r.idleFor, r.idleFor)
	p("than the server holds a poll, so that a polling session's held request has been answered empty\n")
	p("and sent again; the session's keepalive, every %v, still ran) and one round trip timed: what a\n", mux.DefaultKeepAliveInterval)
	p("person back at an interactive session waits for first. One sample per path and repetition,\n")
	p("all paths idle at the same time; the median of %d and the longest.\n\n", s.reps)
	if len(r.prof) > 0 {
		p("**Where the time goes.** CPU profiles, %d s each, of both ends of a streaming and a polling\n", trProfileSecs)
		p("tunnel on loopback, as in [Where the time goes](#where-the-time-goes) (the server above, the\n")
		p("client package in the harness's process, `client.Config.Transport` set) during one iperf3\n")
		p("stream each way:")
		for _, w := range r.prof {
			p(" %s, %s;", w.label, w.figure)
		}
		p(" the WebSocket figures are that section's.\n\n")
		writeProfileTables(b, r.prof)
	}
	if len(s.idle) > 0 {
		s.writeIdleTransports(b)
	}
	p("How the transports' tunnels were started (loopback, then the link):\n\n```sh\n")
	for _, e := range r.envs {
		for _, l := range e.setup {
			p("%s\n", l)
		}
	}
	p("```\n\n")
}

func (s *suite) writeIdleTransports(b *strings.Builder) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	var ws *idleTransport
	for i := range s.idle {
		if s.idle[i].transport == "websocket" {
			ws = &s.idle[i]
		}
	}
	first := s.idle[0].cost
	p("**Idle sessions per transport.** A fresh server for each transport (as in [Scale](#scale): a\n")
	p("users file with a bcrypt hash, `--max-sessions-per-user 2000`), and %d `burrow client` processes\n", first.n)
	p("with one session each over that transport, started %d at a time, each waited for until it\n", first.workers)
	p("logged that it is connected, then left idle; measured as in [Scale](#scale), ten sessions first.\n")
	p("The binary runs one session per process, so these are %d processes, which this machine holds:\n", first.n)
	p("most of a client's VmRSS is the binary's pages, shared by all of them; `RssAnon` is its own. An idle\n")
	p("polling session keeps a poll held at the server, sent again every %v, and the keepalive's\n", httpconn.DefaultHold)
	p("ping every %v.\n\n", mux.DefaultKeepAliveInterval)
	p(idleRSSHeader)
	for _, it := range s.idle {
		p("%s", it.cost.rssRow(fmt.Sprintf("server, %d idle %s sessions", it.cost.n, transportLabels[it.transport])))
	}
	p("\n| per idle session | server RSS after a GC | vs WebSocket | server's open files | a client process's VmRSS | its RssAnon | opened in |\n|---|---|---|---|---|---|---|\n")
	for _, it := range s.idle {
		v := it.cost.perItem(it.cost.srvRSS[:], 2)
		vs := "1.00×"
		if ws != nil && it.transport != "websocket" {
			vs = fmt.Sprintf("%.2f×", v/ws.cost.perItem(ws.cost.srvRSS[:], 2))
		}
		p("| %s | **%.1f KiB** | %s | %.2f | %s | %s | %v |\n", transportLabels[it.transport], v, vs,
			float64(it.fds[1]-it.fds[0])/float64(it.cost.n), mib(it.clientRSS[0]), mib(it.clientRSS[1]), it.cost.took.Round(100*time.Millisecond))
	}
	p("\nThe server's Go metrics after the GC, per session:\n\n")
	p(idleMetricsHeader)
	for _, it := range s.idle {
		p("%s", it.cost.metricsRow(transportLabels[it.transport]))
	}
	p("\n")
	for _, it := range s.idle {
		p("%s", it.cost.heapTable("idle "+transportLabels[it.transport]+" sessions"))
	}
}

// writeTransportGap sets out the transport targets missed in this run,
// with what the CPU figures and profiles show of the transports' cost.
func (s *suite) writeTransportGap(b *strings.Builder) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	r := s.trans
	p("**Transports.** Missed in this run (figures in [Transports](#transports)):\n\n")
	for _, row := range s.transportTargets() {
		if !row.ok {
			p("- %s: %s, against %s.\n", row.what, row.measured, row.target)
		}
	}
	p("\n")
	if e := r.env("loopback"); e != nil && len(e.tp) > 0 {
		ws := cpuPerGiB(e.tp["1up"]["websocket"])
		p("On loopback, where the two cores are the limit, throughput follows the CPU spent per byte:\n")
		p("client and server together used %.2f CPU-seconds per GiB over HTTP streaming and %.2f over\n", cpuPerGiB(e.tp["1up"]["stream"]), cpuPerGiB(e.tp["1up"]["poll"]))
		p("HTTP polling against %.2f over WebSocket (1 stream, client → target).", ws)
	}
	if len(r.prof) > 0 {
		p(" In the profiles of [Transports](#transports), the share of\n")
		p("samples (cumulative) under the growing of slices, and under the functions that grow them:\n\n")
		p("| profile | end | `runtime.growslice` | `httpconn.(*conn).Write` | `httpconn.(*conn).take` | `io.ReadAll` | most samples of their own |\n|---|---|---|---|---|---|---|\n")
		grown := 0.0
		for _, w := range r.prof {
			for _, side := range []struct {
				name string
				top  profileTop
			}{{"server", w.server}, {"client", w.client}} {
				g := side.top.cumOf("runtime.growslice")
				grown = max(grown, g)
				p("| %s | %s | %.0f%% | %.0f%% | %.0f%% | %.0f%% | %s |\n", w.label, side.name, g,
					side.top.cumOf("github.com/burrowtun/burrow/httpconn.(*conn).Write"), side.top.cumOf("github.com/burrowtun/burrow/httpconn.(*conn).take"),
					side.top.cumOf("io.ReadAll"), topFlat(side.top, 3))
			}
		}
		p("\n")
		if grown >= 10 {
			p("`httpconn.(*conn).Write` and `take` append to the connection's buffers of bytes out and in\n")
			p("(`out`, `in` in httpconn/conn.go), which are cut from the front as the bytes leave: once\n")
			p("a buffer's capacity is used up, or it emptied and was dropped, the next append allocates a\n")
			p("new array, clears it and copies what is left into it (`runtime.memclrNoHeapPointers`,\n")
			p("`runtime.memmove`, and `runtime.madvise` as the garbage goes back). `io.ReadAll` reads each\n")
			p("poll's body whole into a slice grown as it comes.")
		}
	}
	p("\nThe transports are package `httpconn` and the client's and server's use of it; this harness\n")
	p("measures them and changes nothing in them.\n\n")
}

// topFlat names the n functions of a profile with the most flat samples
// (the order of go tool pprof -top).
func topFlat(t profileTop, n int) string {
	var out []string
	for _, l := range t.lines[:min(n, len(t.lines))] {
		out = append(out, fmt.Sprintf("`%s` %.1f%%", l.name, l.flatPct))
	}
	return strings.Join(out, ", ")
}

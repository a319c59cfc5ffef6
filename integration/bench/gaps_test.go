//go:build bench

package bench

// The report's account of each missed target: what this run's figures
// and profiles say limits burrow there, what was tried, and what would
// be needed. The figures are this run's; the experiments named "tried"
// were made beside the harness on the same machine and are described,
// not rerun.

import (
	"fmt"
	"runtime"
	"strings"

	"github.com/burrowtun/burrow/mux"
)

// metricPerItem is the change of a server metric per item, from before
// to after the GC.
func (c idleCost) metricPerItem(name string) float64 {
	if c.metrics[0] == nil || c.metrics[2] == nil {
		return 0
	}
	return (c.metrics[2][name] - c.metrics[0][name]) / float64(c.n)
}

// work returns the profiled workload with key, or nil.
func (p *profResult) work(key string) *profWork {
	if p == nil {
		return nil
	}
	for _, w := range p.works {
		if w.key == key {
			return w
		}
	}
	return nil
}

// share returns the flat share of category name (one of
// profileCategories) in a profile.
func share(t profileTop, name string) float64 {
	cats := t.categories()
	for i, c := range profileCategories {
		if strings.HasPrefix(c.name, name) {
			return cats[i]
		}
	}
	return 0
}

func (s *suite) writeGaps(b *strings.Builder, rows []targetRow) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	missed := map[string]bool{}
	for _, r := range rows {
		if !r.ok {
			missed[r.gap] = true
		}
	}
	p("## Gaps\n\n")
	p("For each target missed in this run: what the figures and profiles say limits burrow, what\n")
	p("was tried, and what reaching the target would take. Profiles are in [Where the time goes](#where-the-time-goes).\n\n")
	tpMed := func(sc, path string) float64 { return medianOf(runsBps(s.tp[sc][path])) }
	up, rtt, conn := s.prof.work("upload"), s.prof.work("rtt"), s.prof.work("connect")

	if missed["throughput"] && len(s.tp) > 0 {
		p("**1-stream throughput.** One stream moved %s Gbit/s client → target and %s target → client\n", gbit(tpMed("1up", "burrow")), gbit(tpMed("1down", "burrow")))
		p("through burrow, %s and %s through `ssh -L` with aes128-gcm, %s and %s direct. A run keeps the\n", gbit(tpMed("1up", "ssh-aes")), gbit(tpMed("1down", "ssh-aes")), gbit(tpMed("1up", "direct")), gbit(tpMed("1down", "direct")))
		p("whole machine busy (iperf3's two ends and the tunnel's two processes on %d cores), so the\n", runtime.NumCPU())
		p("figure follows the CPU the path spends per byte, and burrow spends more: %.2f CPU-seconds\n", cpuPerGiB(s.tp["1up"]["burrow"]))
		p("per GiB for its two processes against %.2f for ssh's (1 stream, client → target). Both\n", cpuPerGiB(s.tp["1up"]["ssh-aes"]))
		p("tunnels seal and open each byte once with AES-GCM and cross three loopback TCP connections;\n")
		p("burrow also copies each byte more often (yamux copies a frame's body into its send buffer,\n")
		p("and into the receiving stream's buffer and out again; the client's WebSocket library masks\n")
		p("through a copy; the TLS records of a message are gathered into one write) and hands every\n")
		p("frame between more goroutines (the forward's copy loop, yamux's send and receive loops).")
		if up != nil {
			p(" In the upload profiles (server, client): AES-GCM and TLS %.0f%% and %.0f%% of the\n", share(up.server, "crypto"), share(up.client, "crypto"))
			p("samples, system calls %.0f%% and %.0f%%, copies %.0f%% and %.0f%%, WebSocket framing and masking\n", share(up.server, "syscalls"), share(up.client, "syscalls"), share(up.server, "memmove"), share(up.client, "memmove"))
			p("%.0f%% and %.0f%%, the scheduler finding work %.0f%% and %.0f%% (cumulative).", share(up.server, "WebSocket"), share(up.client, "WebSocket"), up.server.cum("runtime.schedule"), up.client.cum("runtime.schedule"))
		}
		p("\n\n")
		p("*Tried:* coder/websocket v1.8.15 writes a client's masked message through a fixed 4 KiB\n")
		p("buffer, which made the client's TLS records 4 KiB where the server's are 16 KiB, four times\n")
		p("as many records to seal, frame and open per byte client → server. A patched copy with a\n")
		p("64 KiB client write buffer did not move 1-stream iperf3 beyond the run-to-run noise (four\n")
		p("runs each at a load average near 4: median 2.70 Gbit/s patched, 2.75 not); the client now\n")
		p("corks the upgraded connection above TLS for each message as well (`mux.corkBody`), so its\n")
		p("records are full-size too, which cut the CPU of a 1 GiB `burrow send` by 3-6%% in paired\n")
		p("runs. Commit 9e9498b replaced the two write batchers\n")
		p("(one above the WebSocket, one below TLS, each a goroutine per burst) by writing each frame\n")
		p("from yamux's send loop with the connection under TLS corked for the message: 130\n")
		p("allocations per MiB instead of 285 in the `mux` benchmark; since frames no longer share a\n")
		p("syscall, bulk reads grew to 256 KiB (ddf238b), one frame each, and together these lowered\n")
		p("the CPU per GiB of a one-stream upload by about a seventh in paired runs (4.42 s per GiB in\n")
		p("the make bench before them). Running both processes with `GOMAXPROCS=1` lowered the CPU per GiB client\n")
		p("→ target from 4.7-5.4 to 3.6-4.3 s in paired runs at a load average of 5 to 7 (fewer\n")
		p("threads woken to find work), but a server with many sessions needs its cores, so it is\n")
		p("not the default.\n")
		p("*Would take:* fewer copies per byte, which means changes inside yamux (its send loop copies\n")
		p("every body and writes header and body in two calls; its receive path buffers every frame)\n")
		p("or replacing it, and fewer goroutine hand-offs per frame.\n\n")
	}
	if missed["streams"] && len(s.tp) > 0 {
		p("**8 streams.** Eight parallel streams through burrow moved %.2f× (client → target) and\n", tpMed("8up", "burrow")/tpMed("1up", "burrow"))
		p("%.2f× (target → client) what one did; ssh -L aes128-gcm %.2f× and %.2f×. One stream already\n", tpMed("8down", "burrow")/tpMed("1down", "burrow"), tpMed("8up", "ssh-aes")/tpMed("1up", "ssh-aes"), tpMed("8down", "ssh-aes")/tpMed("1down", "ssh-aes"))
		p("keeps both cores busy, and all streams share one TLS connection and one yamux session, so\n")
		p("more streams add goroutines and hand-offs, not CPU: the figure is the same per-byte cost\n")
		p("as above, measured with more overhead, and moves with the noise of a shared machine.\n\n")
	}
	if missed["rtt"] && len(s.lat) > 0 {
		sshKey, sshV := s.sshBest(func(k string) float64 { return medianOf(s.lat[k].rttP50) })
		p("**Round trips.** A 64-byte round trip took %.0f µs through burrow (p50), %.0f µs through\n", medianOf(s.lat["burrow"].rttP50), sshV)
		p("%s and %.0f µs direct. Each direction crosses both tunnel processes, and in each the\n", s.pathLabel(sshKey), medianOf(s.lat["direct"].rttP50))
		p("message passes from goroutine to goroutine: the forward's copy loop to yamux's send loop,\n")
		p("which writes it to the socket, and on the far side yamux's receive loop to the stream's\n")
		p("copy loop. Every hand-off is a wake-up through the scheduler, often of a thread on the\n")
		p("other vCPU.")
		if rtt != nil {
			p(" In the round-trip profiles the scheduler finding work is %.0f%% (server) and\n", rtt.server.cum("runtime.schedule"))
			p("%.0f%% (client) of the samples, system calls %.0f%% and %.0f%%, cryptography %.0f%% and %.0f%%:\n", rtt.client.cum("runtime.schedule"), share(rtt.server, "syscalls"), share(rtt.client, "syscalls"), share(rtt.server, "crypto"), share(rtt.client, "crypto"))
			p("the time goes to hand-offs and system calls, not to computing.")
		}
		p(" OpenSSH does the same\nwork in one poll loop per process.\n\n")
		p("*Tried:* commit 9e9498b writes each frame from yamux's send loop, the WebSocket layer\n")
		p("holding a frame's header back for its body, which dropped the two write batchers'\n")
		p("hand-offs per process and direction; in paired runs beside the previous build (30 rounds\n")
		p("of 100 round trips each, alternating) the p50 moved from 200-300 µs to 220-250 µs, within\n")
		p("the noise. The same build with `GOMAXPROCS=1` in both processes gave 160-170 µs in the\n")
		p("same runs: on this 2-vCPU virtual machine the cost is threads waking each other across\n")
		p("vCPUs, more than the hand-offs themselves. *Would take:* one poll loop per direction, as\n")
		p("ssh has (no goroutine hand-off between a socket and the tunnel), which yamux's design of a\n")
		p("send loop and a receive loop per session does not allow. The target, a third of ssh's\n")
		p("time, is %.0f µs.\n\n", sshV/3)
	}
	if missed["connect"] && len(s.lat) > 0 {
		sshKey, sshV := s.sshBest(func(k string) float64 { return medianOf(s.lat[k].connP50) })
		p("**New connections.** Connect, one round trip and close took %.0f µs through burrow, %.0f µs\n", medianOf(s.lat["burrow"].connP50), sshV)
		p("through %s. burrow's client opens a yamux stream and sends the header naming the target\n", s.pathLabel(sshKey))
		p("with the connection's first bytes behind it, without waiting for the server's reply\n")
		p("(commits f11000a, caf9de2, ae55802): connect and first round trip cost one round trip\n")
		p("through the tunnel where ssh's channel open and confirmation cost two. On a 10 ms link this\n")
		p("halved the figure (23.8 to 12.5 ms); on loopback the time is CPU and wake-ups rather than\n")
		p("round trips: yamux's stream open is a frame of its own, the server's acknowledgement, reply\n")
		p("and echo are three more, each a message and a syscall, and the round trip's hand-offs above.")
		if conn != nil {
			p(" Per stream the processes also start goroutines whose stacks grow as they\n")
			p("first run (`runtime.newstack`: %.0f%% of the server's samples and %.0f%% of the client's in\n", conn.server.cum("runtime.newstack"), conn.client.cum("runtime.newstack"))
			p("the new-connection profiles), and the server dials the target (%.0f%%).", conn.server.cum("net.(*Dialer).DialContext"))
		}
		p("\n\n*Would take:* fewer frames per connection (the stream open carried by the header's frame,\n")
		p("the server's acknowledgement with its reply), which needs changes inside yamux, and the\n")
		p("round trip's wake-ups above.\n\n")
	}
	if missed["cpu"] && len(s.tp) > 0 {
		cpuB := cpuPerGiB(s.tp["1up"]["burrow"])
		_, cpuS := s.sshBest(func(k string) float64 { return cpuPerGiB(s.tp["1up"][k]) })
		p("**CPU per GiB.** burrow's two processes used %.2f CPU-seconds per GiB (1 stream, client →\n", cpuB)
		p("target) against %.2f for the cheaper ssh -L.", cpuS)
		if up != nil {
			c, sv := cpuSplit(s.tp["1up"]["burrow"])
			core := c*(share(up.client, "crypto")+share(up.client, "syscalls"))/100 + sv*(share(up.server, "crypto")+share(up.server, "syscalls"))/100
			p(" Applying the upload profiles' shares to burrow's\n")
			p("figure, its AES-GCM and system calls alone come to about %.2f s per GiB, %.0f%% of ssh's whole\n", core, 100*core/cpuS)
			p("figure: that is the work every tunnel of this kind does (one seal, one open, three loopback\n")
			p("connections), before burrow's own copies and hand-offs, which make up the rest (see\n")
			p("1-stream throughput).")
			if core > cpuS/2 {
				p(" The target, half of ssh's figure (%.2f s), is below that floor.", cpuS/2)
			}
		}
		p("\n\n")
	}
	if missed["session"] && s.scale.sessions.n > 0 {
		c := s.scale.sessions
		d := func(name string) float64 { return c.metricPerItem(name) / 1024 }
		p("**Idle sessions.** %.1f KiB per idle session once the server has collected its garbage\n", c.perItem(c.srvRSS[:], 2))
		p("(%.1f KiB right after opening): four goroutines (%.1f KiB of stacks) and %.1f KiB of heap,\n", c.perItem(c.srvRSS[:], 1), d("go_memstats_stack_inuse_bytes"), d("go_memstats_heap_inuse_bytes"))
		p("mostly the per-connection buffers of net/http, TLS and coder/websocket and yamux's\n")
		p("session (see the heap profile in [Scale](#scale)).\n\n")
	}
	if missed["stream"] && s.scale.streams.n > 0 {
		c := s.scale.streams
		d := func(name string) float64 { return c.metricPerItem(name) / 1024 }
		p("**Idle streams.** %.1f KiB per idle stream once the server has collected its garbage:\n", c.perItem(c.srvRSS[:], 2))
		p("%.1f goroutines per stream with %.1f KiB of stacks, and %.1f KiB of heap (the yamux\n", c.metricPerItem("go_goroutines"), d("go_memstats_stack_inuse_bytes"), d("go_memstats_heap_inuse_bytes"))
		p("stream, the splice's state, the connection to the target; see the heap profile in\n")
		p("[Scale](#scale)). Done: an idle direction holds no buffer (pools only while data flows),\n")
		p("and once idle for 200 ms it is parked (`relay.Parking`) with no goroutine at all: a yamux\n")
		p("stream is woken by the session's connection as it reads a frame for it, a target socket\n")
		p("by one epoll instance for all of them; the stream's receive buffer is given back\n")
		p("(21.7 KiB per stream with a goroutine per direction, 11.4 KiB with shallow ones and no\n")
		p("buffers). *Would take:* a smaller yamux stream (its struct, channels and timers are the\n")
		p("largest item of the heap).\n\n")
	}
	if missed["link"] && s.link != nil {
		l := s.link
		p("**Long link.** With the default window of %d MiB burrow reached %.0f%% (client → target)\n", mux.DefaultStreamWindow>>20, 100*medianOf(l.series["burrow →"])/medianOf(l.series["direct →"]))
		p("and %.0f%% (target → client) of the direct path. The rows with other windows in\n", 100*medianOf(l.series["burrow ←"])/medianOf(l.series["direct ←"]))
		p("[A long link](#a-long-link) show how the window bounds one stream there.\n\n")
	}
	if missed["transports"] && s.trans != nil {
		s.writeTransportGap(b)
	}
	if missed["transfer"] && s.xfer != nil {
		s.writeTransferGap(b, false)
	}
}

// writeTransferGap explains each case where burrow send is short of its
// target against an scp: the target's baseline (plain scp) when the
// target was missed, and with only (as information beyond the target)
// the other scp variants. What was tried is written once: under the
// missed target, or else with the other variants.
// transferMissed reports whether a transfer target was missed.
func (s *suite) transferMissed() bool {
	for _, r := range s.transferTargets() {
		if !r.ok {
			return true
		}
	}
	return false
}

func (s *suite) writeTransferGap(b *strings.Builder, only bool) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	x := s.xfer
	var short []string
	for _, c := range x.cases {
		want := xferTarget[c.key]
		for i, scp := range c.scpTools() {
			if (i == 0) == only || x.speedup(c.key, scp.key) >= want {
				continue
			}
			var line strings.Builder
			fmt.Fprintf(&line, "- %s: burrow send took %.2f s, %s %.2f s (%.2f×, short of %.1f×); burrow's two ends\n", strings.ToUpper(c.label[:1])+c.label[1:],
				medianOf(x.secs[c.key]["burrow"]), scp.label, medianOf(x.secs[c.key][scp.key]), x.speedup(c.key, scp.key), want)
			fmt.Fprintf(&line, "  used %.2f CPU-seconds, scp's %.2f.", medianOf(x.cpu[c.key]["burrow"]), medianOf(x.cpu[c.key][scp.key]))
			if top, ok := x.prof[c.key]; ok {
				var ops []string
				for _, op := range receiverOps {
					if v := op.share(top); v >= 5 {
						ops = append(ops, fmt.Sprintf("%s %.0f%%", op.label, v))
					}
				}
				fmt.Fprintf(&line, " The receiving server (%s): %s.", strings.TrimPrefix(top.header, "Duration: "), strings.Join(ops, "; "))
			}
			short = append(short, line.String()+"\n")
		}
	}
	if len(short) == 0 {
		return
	}
	if only {
		p("Beyond the target, against the other scp variants above:\n\n")
	} else {
		p("**File transfer.**\n\n")
	}
	for _, l := range short {
		p("%s", l)
	}
	if only && s.transferMissed() {
		p("\nWhy, and what was tried: see [Gaps](#gaps), File transfer.\n\n")
		return
	}
	p("\nburrow's receiver verifies a SHA-256 of every chunk and makes every file durable before\n")
	p("renaming it into place, which scp does not (`rsync --fsync` shows what syncing costs on this\n")
	p("disk). The transfer code is the `transfer` package's; this harness measures it.\n\n")
	p("*Done:* large files are written with O_DIRECT where the filesystem allows it (commit\n")
	p("6cc3012): on this VM every fresh page-cache page costs a fault on the host, and writing was\n")
	p("45%% of the receiver's samples; the 1 GiB send took half the time and half the CPU after it.\n")
	p("Each byte is hashed once per end (a file's digest is a hash of its chunks' digests).\n")
	p("*Tried:* 1 and 8 MiB chunks (1 MiB cost more CPU, 8 MiB the same as 4), `--parallel` 2 and\n")
	p("8 (no better than 4), several writers per file (the disk is not the limit), chunks written\n")
	p("to the stream in 256 KiB or 1 MiB pieces rather than as one frame (no change beyond the\n")
	p("noise), SHA-512 and BLAKE2b/2s (slower than SHA-256 with this CPU's SHA extensions).\n")
	p("Two SHA-256 passes over every byte, one per end, cost about 1.5 CPU-seconds per GiB here,\n")
	p("on 2 cores shared by both ends. *Would take:* a faster chunk hash than the protocol allows\n")
	p("today (BLAKE3 ran about three times SHA-256 here, a new protocol version) and the tunnel's\n")
	p("own copies (see 1-stream throughput).\n\n")
}

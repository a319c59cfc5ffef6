package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/burrowtun/burrow/integration/harness"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Fault injection: the client reaches the server through an in-process
// toxiproxy (github.com/Shopify/toxiproxy/v2) that adds latency, limits
// bandwidth, resets the connection or silently drops everything; or the
// server is SIGKILLed and started again on the same address. Unless a case
// says otherwise, each end runs with --keepalive 1s, so a silent peer must
// be noticed within about two seconds.

const (
	faultKeepalive = time.Second
	// lossBound is how soon the client must log that the session is lost
	// once a fault cuts it: two keepalive intervals plus slack for a
	// loaded machine.
	lossBound = 4 * time.Second
	// recoverBound is how soon it must be connected again once the fault
	// is gone (--max-retry-interval 1s).
	recoverBound = 15 * time.Second
)

var connectionLostLine = regexp.MustCompile(`msg="connection lost; reconnecting"`)

// faultProxy is a toxiproxy proxy in front of a burrow server.
type faultProxy struct {
	p    *toxiproxy.Proxy
	addr string // where clients connect
}

// startFaultProxy starts a proxy on 127.0.0.1:0 that relays to upstream.
// It is stopped, and every connection through it closed, when the test
// ends.
func startFaultProxy(t *testing.T, upstream string) *faultProxy {
	t.Helper()
	api := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(api, "burrow", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("start toxiproxy: %v", err)
	}
	t.Cleanup(p.Stop)
	return &faultProxy{p: p, addr: p.Listen}
}

// add adds a toxic. stream is "upstream" (client to server) or
// "downstream"; attrs are the toxic's attributes (milliseconds, KB/s).
func (f *faultProxy) add(t *testing.T, name, kind, stream string, attrs map[string]int64) {
	t.Helper()
	body, err := json.Marshal(map[string]any{"name": name, "type": kind, "stream": stream, "attributes": attrs})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.p.Toxics.AddToxicJson(bytes.NewReader(body)); err != nil {
		t.Fatalf("add toxic %s: %v", name, err)
	}
}

// both adds a toxic in both directions, named name_up and name_down.
func (f *faultProxy) both(t *testing.T, name, kind string, attrs map[string]int64) {
	t.Helper()
	f.add(t, name+"_up", kind, "upstream", attrs)
	f.add(t, name+"_down", kind, "downstream", attrs)
}

// remove removes a toxic from the proxy and from every connection through
// it. It returns once each connection has let go of it.
func (f *faultProxy) remove(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		if err := f.p.Toxics.RemoveToxic(context.Background(), name); err != nil {
			t.Fatalf("remove toxic %s: %v", name, err)
		}
	}
}

// faultTunnel is a server, a fault proxy in front of it and a client that
// reaches the server through the proxy with one forward to an echo target.
type faultTunnel struct {
	srv    *harness.Server
	proxy  *faultProxy
	client *harness.Proc
	local  string // the client's forward to the echo target
}

// startFaultTunnel starts a faultTunnel whose ends use keepalive. setup,
// when not nil, adds toxics before the client connects, so that they apply
// from its first byte.
func startFaultTunnel(t *testing.T, keepalive time.Duration, setup func(*testing.T, *faultProxy)) *faultTunnel {
	t.Helper()
	keepaliveFlags := []string{"--keepalive", keepalive.String()}
	srv := burrow.StartTestServer(t, nil, keepaliveFlags...)
	proxy := startFaultProxy(t, srv.Addr)
	if setup != nil {
		setup(t, proxy)
	}
	echo := harness.StartEcho(t)
	flags := append([]string{"--fingerprint", srv.Cert.Fingerprint, "--max-retry-interval", "1s"}, keepaliveFlags...)
	client, locals := burrow.StartClient(t, "wss://"+proxy.addr, harness.TestUser+":"+harness.TestPass, flags, "127.0.0.1:0:"+echo)
	return &faultTunnel{srv: srv, proxy: proxy, client: client, local: locals[0]}
}

// faultPayload is the pseudo-random byte stream number seed.
func faultPayload(seed uint64) io.Reader {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	return rand.NewChaCha8(key)
}

// echoResult is what pumpEcho saw.
type echoResult struct {
	sent, echoed int64 // bytes written, and bytes read back and found equal to them
	elapsed      time.Duration
	err          error // nil when all size bytes came back intact and then EOF
	corrupt      bool  // a byte came back other than it was sent
}

// pumpEcho sends size bytes of faultPayload(seed) through the forward at local
// to an echo target, reading the echo at the same time, within maxTime.
// Every byte read back is compared with the byte sent at that offset, and
// at the end the SHA-256 of both streams: a corruption or a loss is an
// error at once, a cut connection is an error after the bytes that made it
// through intact.
func pumpEcho(local string, seed uint64, size int64, maxTime time.Duration) echoResult {
	start := time.Now()
	res := echoResult{}
	c, err := net.DialTimeout("tcp", local, harness.IOTimeout)
	if err != nil {
		res.err = err
		return res
	}
	defer c.Close()
	c.SetDeadline(start.Add(maxTime))
	sentHash := sha256.New()
	type written struct {
		n   int64
		err error
	}
	wdone := make(chan written, 1)
	go func() {
		n, err := io.CopyBuffer(c, io.TeeReader(io.LimitReader(faultPayload(seed), size), sentHash), make([]byte, 32<<10))
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		wdone <- written{n, err}
	}()
	want := faultPayload(seed)
	gotHash := sha256.New()
	buf, wbuf := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		n, rerr := c.Read(buf)
		if n > 0 {
			io.ReadFull(want, wbuf[:n])
			if !bytes.Equal(buf[:n], wbuf[:n]) {
				res.err = fmt.Errorf("echo differs from what was sent at byte %d", res.echoed+int64(firstDifference(buf[:n], wbuf[:n])))
				res.corrupt = true
				break
			}
			gotHash.Write(buf[:n])
			res.echoed += int64(n)
		}
		if rerr == io.EOF {
			if res.echoed != size {
				res.err = fmt.Errorf("echo ended after %d of %d bytes", res.echoed, size)
			} else if !bytes.Equal(gotHash.Sum(nil), sentHash.Sum(nil)) {
				res.err = errors.New("sha256 of the echo differs from that of the payload")
				res.corrupt = true
			}
			break
		}
		if rerr != nil {
			res.err = fmt.Errorf("read echo after %d bytes: %w", res.echoed, rerr)
			break
		}
	}
	if res.err != nil {
		c.Close() // unblock the writer
	}
	w := <-wdone
	res.sent = w.n
	if res.err == nil && w.err != nil {
		res.err = fmt.Errorf("write: %w", w.err)
	}
	res.elapsed = time.Since(start)
	return res
}

// firstDifference returns the index of the first byte where a and b
// differ, which must be as long, or -1.
func firstDifference(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// checkEchoIntact pumps size bytes through local and fails the test unless all
// of them come back intact.
func checkEchoIntact(t *testing.T, local string, seed uint64, size int64) echoResult {
	t.Helper()
	r := pumpEcho(local, seed, size, time.Minute)
	if r.err != nil {
		t.Fatalf("echo of %d bytes (seed %d) through %s: %v (sent %d, %d came back intact)", size, seed, local, r.err, r.sent, r.echoed)
	}
	return r
}

// startPump runs pumpEcho in the background for a transfer meant to be
// cut by a fault.
func startPump(local string, seed uint64) <-chan echoResult {
	ch := make(chan echoResult, 1)
	go func() { ch <- pumpEcho(local, seed, 1<<40, 30*time.Second) }()
	return ch
}

// awaitCut waits for a transfer started by startPump to end, which it
// must do within bound of the fault: with an error (the session carrying
// it is gone), and with every byte that came back intact.
func awaitCut(t *testing.T, pump <-chan echoResult, fault time.Time, bound time.Duration) {
	t.Helper()
	select {
	case r := <-pump:
		if r.err == nil {
			t.Fatalf("a transfer through the cut session ended without an error")
		}
		if r.corrupt {
			t.Fatalf("transfer cut by the fault: %v", r.err)
		}
		if r.echoed == 0 {
			t.Errorf("no data flowed before the fault: it was not mid-stream")
		}
		t.Logf("transfer in flight ended %v after the fault: %v (%d bytes echoed intact before)",
			time.Since(fault).Round(time.Millisecond), r.err, r.echoed)
	case <-time.After(bound):
		t.Fatalf("a transfer through the cut session was still hanging %v after the fault", bound)
	}
}

// awaitLoss waits for the client to log the loss of its session, n lost
// sessions in all, within lossBound of the fault.
func awaitLoss(t *testing.T, ft *faultTunnel, n int, fault time.Time) {
	t.Helper()
	ft.client.WaitLogCount(t, connectionLostLine, n, lossBound-time.Since(fault))
	t.Logf("client noticed the loss %v after the fault", time.Since(fault).Round(time.Millisecond))
}

// awaitRecovery waits for the client to be connected for the nth time and
// checks that its forward carries data again; since is when the fault
// began, for the log.
func awaitRecovery(t *testing.T, ft *faultTunnel, n int, since time.Time) {
	t.Helper()
	ft.client.WaitLogCount(t, harness.ConnectedLine, n, recoverBound)
	t.Logf("client connected again %v after the fault", time.Since(since).Round(time.Millisecond))
	checkEchoIntact(t, ft.local, 99, 1<<20)
	if ft.client.Exited() {
		t.Fatalf("client exited (code %d)", ft.client.ExitCode)
	}
}

// TestFaults puts each fault between a client and its server in turn: the
// client must carry data intact through latency and a bandwidth limit
// without losing its session, and notice a reset, a blackhole or a killed
// server within its keepalive bounds, reconnect by itself and forward
// again.
func TestFaults(t *testing.T) {
	t.Parallel()

	t.Run("latency and jitter", func(t *testing.T) {
		t.Parallel()
		ft := startFaultTunnel(t, faultKeepalive, func(t *testing.T, f *faultProxy) {
			f.both(t, "latency", "latency", map[string]int64{"latency": 50, "jitter": 20})
		})
		// Round trips: each crosses the proxy twice, 30-70 ms each way.
		var rtts []time.Duration
		for i := range 5 {
			start := time.Now()
			harness.EchoRoundTrip(t, ft.local, []byte(fmt.Sprintf("round trip %d", i)))
			rtts = append(rtts, time.Since(start).Round(time.Millisecond))
		}
		t.Logf("forwarded round trips (dial, echo, close) through 50±20 ms each way: %v", rtts)
		for _, d := range rtts {
			if d < 60*time.Millisecond {
				t.Errorf("a round trip took %v, less than the 60 ms the latency toxics impose: they are not in the path", d)
			}
		}
		// Bulk transfers on concurrent streams, every byte checked.
		const streams, size = 4, 8 << 20
		results := make(chan echoResult, streams)
		for i := range streams {
			go func() { results <- pumpEcho(ft.local, uint64(10+i), size, time.Minute) }()
		}
		for range streams {
			r := <-results
			if r.err != nil {
				t.Errorf("echo of %d bytes under latency: %v (%d intact)", size, r.err, r.echoed)
				continue
			}
			t.Logf("%d MiB echoed intact under latency in %v", size>>20, r.elapsed.Round(time.Millisecond))
		}
		if n := ft.client.CountLog(connectionLostLine); n != 0 {
			t.Errorf("client lost its session %d times under mere latency with --keepalive %v", n, faultKeepalive)
		}
	})

	// A bandwidth limit, with the default keepalive (15 s): the data
	// must arrive intact at the limited rate.
	const rate = 2000 // KB/s, i.e. 2 MB/s each way
	const bwSize = 6 << 20
	bandwidth := func(t *testing.T, f *faultProxy) {
		f.both(t, "bandwidth", "bandwidth", map[string]int64{"rate": rate})
	}
	t.Run("bandwidth limit", func(t *testing.T) {
		t.Parallel()
		ft := startFaultTunnel(t, 15*time.Second, bandwidth)
		r := checkEchoIntact(t, ft.local, 20, bwSize)
		mbps := float64(bwSize) / 1e6 / r.elapsed.Seconds()
		t.Logf("%d MiB echoed intact through %d KB/s each way in %v: %.2f MB/s", bwSize>>20, rate, r.elapsed.Round(time.Millisecond), mbps)
		if mbps > 1.2*rate/1000 {
			t.Errorf("%.2f MB/s through a %d KB/s limit: the limit is not in the path", mbps, rate)
		}
		if n := ft.client.CountLog(connectionLostLine); n != 0 {
			t.Errorf("client lost its session %d times under a bandwidth limit", n)
		}
	})

	// The same with --keepalive 1s: each end's pings wait behind seconds
	// of queued data, and the keepalive must not mistake that busy slow
	// link for a dead peer.
	t.Run("bandwidth limit with keepalive 1s", func(t *testing.T) {
		t.Parallel()
		ft := startFaultTunnel(t, faultKeepalive, bandwidth)
		r := checkEchoIntact(t, ft.local, 21, bwSize)
		t.Logf("%d MiB echoed intact through %d KB/s each way with --keepalive %v in %v", bwSize>>20, rate, faultKeepalive, r.elapsed.Round(time.Millisecond))
		if n := ft.client.CountLog(connectionLostLine); n != 0 {
			t.Errorf("client lost its session %d times on a busy slow link with --keepalive %v", n, faultKeepalive)
		}
	})

	t.Run("reset mid-stream", func(t *testing.T) {
		t.Parallel()
		// toxiproxy makes a reset_peer toxic reset (SO_LINGER 0: an RST,
		// not a FIN) only on connections that start while it is there,
		// and it holds back the data it sees until it fires. So it is
		// armed from the start with toxicity 0, which passes everything,
		// and raised to 1 mid-stream.
		ft := startFaultTunnel(t, faultKeepalive, func(t *testing.T, f *faultProxy) {
			body := `{"name":"reset","type":"reset_peer","stream":"upstream","toxicity":0,"attributes":{"timeout":0}}`
			if _, err := f.p.Toxics.AddToxicJson(strings.NewReader(body)); err != nil {
				t.Fatal(err)
			}
		})
		checkEchoIntact(t, ft.local, 30, 1<<20)
		connected := ft.client.CountLog(harness.ConnectedLine)
		pump := startPump(ft.local, 31)
		time.Sleep(200 * time.Millisecond) // let it flow
		if _, err := ft.proxy.p.Toxics.UpdateToxicJson("reset", strings.NewReader(`{"toxicity":1,"attributes":{"timeout":0}}`)); err != nil {
			t.Fatal(err)
		}
		reset := time.Now()
		awaitCut(t, pump, reset, lossBound)
		// Disarmed for the reconnection (an attempt made meanwhile may
		// be reset too; the client retries).
		ft.proxy.remove(t, "reset")
		awaitLoss(t, ft, 1, reset)
		awaitRecovery(t, ft, connected+1, reset)
	})

	t.Run("blackhole", func(t *testing.T) {
		t.Parallel()
		ft := startFaultTunnel(t, faultKeepalive, nil)
		checkEchoIntact(t, ft.local, 40, 1<<20)
		pump := startPump(ft.local, 41)
		time.Sleep(200 * time.Millisecond)
		// A timeout toxic without a timeout swallows every byte and
		// never closes: each end hears nothing more, as behind a NAT
		// that lost its state.
		ft.proxy.both(t, "blackhole", "timeout", map[string]int64{"timeout": 0})
		cut := time.Now()
		ft.client.WaitLog(t, connectionLostLine, lossBound)
		t.Logf("client noticed the silence %v after the blackhole", time.Since(cut).Round(time.Millisecond))
		awaitCut(t, pump, cut, lossBound)
		ft.srv.WaitLog(t, regexp.MustCompile(`msg="session closed"`), lossBound-time.Since(cut))
		t.Logf("server closed the silent session %v after the blackhole", time.Since(cut).Round(time.Millisecond))
		// Removing a timeout toxic closes the connections it held,
		// including a reconnection attempt made meanwhile.
		ft.proxy.remove(t, "blackhole_up", "blackhole_down")
		awaitRecovery(t, ft, 2, cut)
	})

	t.Run("server SIGKILL", func(t *testing.T) {
		t.Parallel()
		ft := startFaultTunnel(t, faultKeepalive, nil)
		checkEchoIntact(t, ft.local, 50, 1<<20)
		pump := startPump(ft.local, 51)
		time.Sleep(200 * time.Millisecond)
		ft.srv.Kill(t)
		killed := time.Now()
		awaitLoss(t, ft, 1, killed)
		awaitCut(t, pump, killed, lossBound)
		// The one place a port is reused on purpose: the proxy relays to
		// the old address.
		srv2 := burrow.StartServer(t, ft.srv.Cert, ft.srv.Authfile, "--listen", ft.srv.Addr, "--keepalive", faultKeepalive.String())
		awaitRecovery(t, ft, 2, killed)
		srv2.WaitLog(t, harness.SessionOpenedLine, harness.IOTimeout)
	})
}

// TestFaultsFileTransfer resets the connection of a 200 MiB 'burrow send'
// through the fault proxy a third of the way in: the send must fail at
// once saying how to resume, leave nothing under the file's final name,
// and the same command run again must resume rather than start over and
// deliver the file intact. (Killing the server or the client mid-transfer
// is TestTransferInterrupted.)
func TestFaultsFileTransfer(t *testing.T) {
	t.Parallel()
	const size = 200 << 20
	cert := burrow.NewCert(t, "localhost", "127.0.0.1")
	authfile := filepath.Join(t.TempDir(), "users.json")
	burrow.NewUser(t, authfile, harness.TestUser, harness.TestPass)
	root := t.TempDir()
	fsrv := startFileServer(t, cert, authfile, root)
	proxy := startFaultProxy(t, fsrv.Addr)
	// Armed harmless from the start, as in TestFaults/reset_mid-stream.
	if _, err := proxy.p.Toxics.AddToxicJson(strings.NewReader(`{"name":"reset","type":"reset_peer","stream":"upstream","toxicity":0,"attributes":{"timeout":0}}`)); err != nil {
		t.Fatal(err)
	}
	viaProxy := *fsrv
	srvViaProxy := *fsrv.Server
	srvViaProxy.URL = "wss://" + proxy.addr
	viaProxy.Server = &srvViaProxy

	file := filepath.Join(t.TempDir(), "fault.bin")
	writeRandomFile(t, file, size, 8)
	sum := fileSHA256(t, file)
	final := filepath.Join(fsrv.root, "inbox", "fault.bin")

	p := viaProxy.startTransfer(t, "send", []string{"--to", "inbox"}, file)
	at := progressAt(t, p, size/3, transferTimeout)
	if _, err := proxy.p.Toxics.UpdateToxicJson("reset", strings.NewReader(`{"toxicity":1,"attributes":{"timeout":0}}`)); err != nil {
		t.Fatal(err)
	}
	reset := time.Now()
	if code := p.WaitExit(t, lossBound); code == 0 {
		t.Fatal("send succeeded although its connection was reset a third of the way in")
	}
	first := progressMax(p)
	t.Logf("reset at %s through; send failed %v later with %s through", mib(at), time.Since(reset).Round(time.Millisecond), mib(first))
	if !strings.Contains(p.Stderr.String(), "run the same command again") {
		t.Errorf("the failed send does not say how to resume:\n%s", p.Stderr.String())
	}
	if _, err := os.Stat(final); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s exists after the reset (%v): an unfinished file under its final name", final, err)
	}
	if ps := partials(t, root); len(ps) != 1 {
		t.Fatalf("partial files after the reset: %q, want one", ps)
	}

	received := fileBytesIn(t, fsrv.admin) // by the server, before the reset

	proxy.remove(t, "reset")
	s := viaProxy.transfer(t, "send", []string{"--to", "inbox"}, file)
	// The receiver verifies and journals each chunk as it lands, so what
	// crosses twice is at most the chunk each of the 4 data streams was
	// in the middle of: 16 MiB of 4 MiB chunks, 8% of the file.
	resent := fileBytesIn(t, fsrv.admin) - size
	t.Logf("the server received %s before the reset; the rerun sent %s and verified %s in place: %s crossed twice",
		mib(int64(received)), mib(s.BytesSent), mib(s.BytesResumed), mib(int64(resent)))
	if s.Files != 1 {
		t.Errorf("the rerun committed %d files, want 1", s.Files)
	}
	if s.BytesResumed == 0 {
		t.Errorf("the rerun resumed nothing of a file that had %s through before the reset", mib(first))
	}
	if resent > 16<<20 {
		t.Errorf("%s of the file crossed twice, want at most 16 MiB", mib(int64(resent)))
	}
	if fileSHA256(t, final) != sum {
		t.Fatal("the file on the server differs from the one sent")
	}
	if ps := partials(t, root); len(ps) != 0 {
		t.Errorf("partial files left after completion: %q", ps)
	}
}

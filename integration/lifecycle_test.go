package integration

import (
	"net"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// TestServerRestart kills the server under a connected client and starts a
// new one on the same address: the client must notice, reconnect by itself
// and forward new connections again.
func TestServerRestart(t *testing.T) {
	t.Parallel()
	const reconnectTimeout = 20 * time.Second
	echo := startEcho(t)
	tuning := []string{"--keepalive", "1s"}
	tun := startTunnel(t, nil, tuning, append([]string{"--max-retry-interval", "1s"}, tuning...), "127.0.0.1:0:"+echo)
	srv, client, local := tun.srv, tun.client, tun.locals[0]
	echoRoundTrip(t, local, []byte("before the restart"))

	srv.kill(t)
	killed := time.Now()
	client.waitLog(t, regexp.MustCompile(`msg="connection lost; reconnecting"`), reconnectTimeout)
	t.Logf("client noticed the loss after %v", time.Since(killed).Round(time.Millisecond))

	// A connection that arrives while the server is away waits for the
	// next session rather than failing.
	c, err := net.DialTimeout("tcp", local, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	early := make(chan error, 1)
	go func() { early <- echoOver(c.(*net.TCPConn), []byte("during the outage")) }()

	// The one place a port is reused on purpose: the restarted server must
	// come back where the client expects it.
	srv2 := startServer(t, srv.cert, srv.authfile, append([]string{"--listen", srv.addr}, tuning...)...)
	if srv2.addr != srv.addr {
		t.Fatalf("restarted server listens on %s, want %s", srv2.addr, srv.addr)
	}
	client.waitLogCount(t, connectedLine, 2, reconnectTimeout)
	srv2.waitLog(t, sessionOpenedLine, ioTimeout)
	t.Logf("client reconnected %v after the kill", time.Since(killed).Round(time.Millisecond))
	echoRoundTrip(t, local, []byte("after the restart"))
	select {
	case err := <-early:
		if err != nil {
			t.Errorf("connection made during the outage: %v", err)
		}
	case <-time.After(ioTimeout):
		t.Errorf("connection made during the outage still open %v after the reconnection", ioTimeout)
	}
	if client.exited() {
		t.Fatalf("client exited (code %d) across the restart", client.exitCode)
	}
}

// TestGracefulShutdown sends SIGTERM to each end of a tunnel with a
// forwarded connection open, in both orders: each must exit 0 promptly.
// The server drains open streams for --shutdown-timeout; the idle
// connection here never ends by itself, so the server must cut it then.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	const drain = time.Second
	const shutdownTimeout = drain + 4*time.Second
	tests := []struct {
		name        string
		serverFirst bool
	}{
		{"client then server", false},
		{"server then client", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			echo := startEcho(t)
			tun := startTunnel(t, nil, []string{"--shutdown-timeout", drain.String()}, nil, "127.0.0.1:0:"+echo)
			echoRoundTrip(t, tun.locals[0], []byte("before shutdown"))

			// An open, idle forwarded connection must not hold up either end.
			c, err := net.DialTimeout("tcp", tun.locals[0], ioTimeout)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			tun.srv.waitLog(t, regexp.MustCompile(`msg="stream opened"`), ioTimeout)

			order := []*proc{tun.client, tun.srv.proc}
			if tt.serverFirst {
				order[0], order[1] = order[1], order[0]
			}
			for _, p := range order {
				start := time.Now()
				p.signal(t, syscall.SIGTERM)
				code := p.waitExit(t, shutdownTimeout)
				t.Logf("%s exited with code %d %v after SIGTERM", p.name, code, time.Since(start).Round(time.Millisecond))
				if code != 0 {
					t.Errorf("%s exit code %d after SIGTERM, want 0", p.name, code)
				}
				if _, other := stderrLines(p); len(other) != 0 {
					t.Errorf("%s printed %q on a clean shutdown", p.name, other)
				}
			}
			tun.srv.waitLog(t, regexp.MustCompile(`msg="shutting down"`), 0)
		})
	}
}

// TestFrozenPeer stops one end of a tunnel with SIGSTOP, as a hung host or a
// network black hole would look: keepalives must make the other end drop
// the session within a few intervals, and once the frozen end resumes the
// client must connect again by itself.
func TestFrozenPeer(t *testing.T) {
	t.Parallel()
	const (
		detectTimeout    = 10 * time.Second // keepalive 1s: a silent peer is dropped after about 2s
		reconnectTimeout = 45 * time.Second // the client's dial to a frozen server times out after 30s
	)
	tests := []struct {
		name         string
		freezeServer bool
	}{
		{"server frozen", true},
		{"client frozen", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			echo := startEcho(t)
			tuning := []string{"--keepalive", "1s"}
			tun := startTunnel(t, nil, tuning, append([]string{"--max-retry-interval", "1s"}, tuning...), "127.0.0.1:0:"+echo)
			echoRoundTrip(t, tun.locals[0], []byte("before the freeze"))

			frozen, watcher := tun.srv.proc, tun.client
			lost := regexp.MustCompile(`msg="connection lost; reconnecting"`)
			if !tt.freezeServer {
				frozen, watcher = tun.client, tun.srv.proc
				lost = regexp.MustCompile(`msg="session closed"`)
			}
			frozen.signal(t, syscall.SIGSTOP)
			stopped := time.Now()
			// Resume it even if the test fails, so that its cleanup's
			// SIGKILL is not its only way out (SIGKILL works on stopped
			// processes too; this is for the logs).
			t.Cleanup(func() { syscall.Kill(frozen.cmd.Process.Pid, syscall.SIGCONT) })
			watcher.waitLog(t, lost, detectTimeout)
			t.Logf("%s noticed the silent %s after %v", watcher.name, frozen.name, time.Since(stopped).Round(time.Millisecond))
			frozen.signal(t, syscall.SIGCONT)

			tun.client.waitLogCount(t, connectedLine, 2, reconnectTimeout)
			tun.srv.waitLogCount(t, sessionOpenedLine, 2, ioTimeout)
			t.Logf("client reconnected %v after the freeze", time.Since(stopped).Round(time.Millisecond))
			echoRoundTrip(t, tun.locals[0], []byte("after the freeze"))
		})
	}
}

package integration

import (
	"net"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/burrowtun/burrow/integration/harness"
)

// TestServerRestart kills the server under a connected client and starts a
// new one on the same address: the client must notice, reconnect by itself
// and forward new connections again.
func TestServerRestart(t *testing.T) {
	t.Parallel()
	const reconnectTimeout = 20 * time.Second
	echo := harness.StartEcho(t)
	tuning := []string{"--keepalive", "1s"}
	tun := burrow.StartTunnel(t, nil, tuning, append([]string{"--max-retry-interval", "1s"}, tuning...), "127.0.0.1:0:"+echo)
	srv, client, local := tun.Server, tun.Client, tun.Locals[0]
	harness.EchoRoundTrip(t, local, []byte("before the restart"))

	srv.Kill(t)
	killed := time.Now()
	client.WaitLog(t, regexp.MustCompile(`msg="connection lost; reconnecting"`), reconnectTimeout)
	t.Logf("client noticed the loss after %v", time.Since(killed).Round(time.Millisecond))

	// A connection that arrives while the server is away waits for the
	// next session rather than failing.
	c, err := net.DialTimeout("tcp", local, harness.IOTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	early := make(chan error, 1)
	go func() { early <- harness.EchoOver(c.(*net.TCPConn), []byte("during the outage")) }()

	// The one place a port is reused on purpose: the restarted server must
	// come back where the client expects it.
	srv2 := burrow.StartServer(t, srv.Cert, srv.Authfile, append([]string{"--listen", srv.Addr}, tuning...)...)
	if srv2.Addr != srv.Addr {
		t.Fatalf("restarted server listens on %s, want %s", srv2.Addr, srv.Addr)
	}
	client.WaitLogCount(t, harness.ConnectedLine, 2, reconnectTimeout)
	srv2.WaitLog(t, harness.SessionOpenedLine, harness.IOTimeout)
	t.Logf("client reconnected %v after the kill", time.Since(killed).Round(time.Millisecond))
	harness.EchoRoundTrip(t, local, []byte("after the restart"))
	select {
	case err := <-early:
		if err != nil {
			t.Errorf("connection made during the outage: %v", err)
		}
	case <-time.After(harness.IOTimeout):
		t.Errorf("connection made during the outage still open %v after the reconnection", harness.IOTimeout)
	}
	if client.Exited() {
		t.Fatalf("client exited (code %d) across the restart", client.ExitCode)
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
			echo := harness.StartEcho(t)
			tun := burrow.StartTunnel(t, nil, []string{"--shutdown-timeout", drain.String()}, nil, "127.0.0.1:0:"+echo)
			harness.EchoRoundTrip(t, tun.Locals[0], []byte("before shutdown"))

			// An open, idle forwarded connection must not hold up either end.
			c, err := net.DialTimeout("tcp", tun.Locals[0], harness.IOTimeout)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			tun.Server.WaitLog(t, regexp.MustCompile(`msg="stream opened"`), harness.IOTimeout)

			order := []*harness.Proc{tun.Client, tun.Server.Proc}
			if tt.serverFirst {
				order[0], order[1] = order[1], order[0]
			}
			for _, p := range order {
				start := time.Now()
				p.Signal(t, syscall.SIGTERM)
				code := p.WaitExit(t, shutdownTimeout)
				t.Logf("%s exited with code %d %v after SIGTERM", p.Name, code, time.Since(start).Round(time.Millisecond))
				if code != 0 {
					t.Errorf("%s exit code %d after SIGTERM, want 0", p.Name, code)
				}
				if _, other := harness.StderrLines(p); len(other) != 0 {
					t.Errorf("%s printed %q on a clean shutdown", p.Name, other)
				}
			}
			tun.Server.WaitLog(t, regexp.MustCompile(`msg="shutting down"`), 0)
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
			echo := harness.StartEcho(t)
			tuning := []string{"--keepalive", "1s"}
			tun := burrow.StartTunnel(t, nil, tuning, append([]string{"--max-retry-interval", "1s"}, tuning...), "127.0.0.1:0:"+echo)
			harness.EchoRoundTrip(t, tun.Locals[0], []byte("before the freeze"))

			frozen, watcher := tun.Server.Proc, tun.Client
			lost := regexp.MustCompile(`msg="connection lost; reconnecting"`)
			if !tt.freezeServer {
				frozen, watcher = tun.Client, tun.Server.Proc
				lost = regexp.MustCompile(`msg="session closed"`)
			}
			frozen.Signal(t, syscall.SIGSTOP)
			stopped := time.Now()
			// Resume it even if the test fails, so that its cleanup's
			// SIGKILL is not its only way out (SIGKILL works on stopped
			// processes too; this is for the logs).
			t.Cleanup(func() { syscall.Kill(frozen.Cmd.Process.Pid, syscall.SIGCONT) })
			watcher.WaitLog(t, lost, detectTimeout)
			t.Logf("%s noticed the silent %s after %v", watcher.Name, frozen.Name, time.Since(stopped).Round(time.Millisecond))
			frozen.Signal(t, syscall.SIGCONT)

			tun.Client.WaitLogCount(t, harness.ConnectedLine, 2, reconnectTimeout)
			tun.Server.WaitLogCount(t, harness.SessionOpenedLine, 2, harness.IOTimeout)
			t.Logf("client reconnected %v after the freeze", time.Since(stopped).Round(time.Millisecond))
			harness.EchoRoundTrip(t, tun.Locals[0], []byte("after the freeze"))
		})
	}
}

package integration

import (
	"regexp"
	"strings"
	"testing"
)

// --max-sessions, end to end: with the server at its maximum, a command
// that needs a session of its own is refused at once with the reason
// and a non-zero exit, the session already open keeps working, and once
// it ends the same command goes through.
func TestMaxSessionsFlag(t *testing.T) {
	fsrv := newFileServer(t, "--max-sessions", "1")
	echo := startEcho(t)
	client, locals := startClient(t, fsrv.url, testUser+":"+testPass,
		[]string{"--fingerprint", fsrv.cert.fingerprint}, "127.0.0.1:0:"+echo)

	_, msg := runFailing(t, fsrv.env(), "ls", fsrv.url)
	if !strings.Contains(msg, "the server has its maximum of 1 sessions; retry later") {
		t.Errorf("ls with the server at --max-sessions: %q, want the reason", msg)
	}
	echoRoundTrip(t, locals[0], []byte("the open session still works"))
	m := scrapeMetrics(t, fsrv.admin)
	if n := m.value("burrow_sessions"); n != 1 {
		t.Errorf("burrow_sessions = %v, want 1", n)
	}

	client.kill(t)
	fsrv.waitLog(t, regexp.MustCompile(`msg="session closed"`), ioTimeout)
	p := startProc(t, "ls", "", fsrv.env(), "ls", fsrv.url)
	if code := p.waitExit(t, exitTimeout); code != 0 {
		t.Fatalf("ls once the session ended: exit %d\n%s", code, p.stderr.String())
	}
}

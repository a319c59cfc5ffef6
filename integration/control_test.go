package integration

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/burrowtun/burrow/integration/harness"
)

// A transfer through a running client's control socket whose stream the
// server refuses to open (here: the session is at --max-streams) fails
// with the server's reason on one line, not a bare end of file; once
// streams are free again the same command goes through, on the same
// client.
func TestControlRelaysRefusal(t *testing.T) {
	const maxStreams = 3
	fsrv := newFileServer(t, "--max-streams", "3")
	echo := harness.StartEcho(t)
	control := filepath.Join(t.TempDir(), "control.sock")
	client, locals := burrow.StartClient(t, fsrv.URL, harness.TestUser+":"+harness.TestPass,
		[]string{"--fingerprint", fsrv.Cert.Fingerprint, "--control", control}, "127.0.0.1:0:"+echo)
	src := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(src, []byte("payload"), 0o600); err != nil {
		t.Fatal(err)
	}
	send := []string{"send", "--parallel", "1", "--control", control, "--to", "inbox", src}

	// Every stream the session may have, held by forwarded connections.
	var held []net.Conn
	for range maxStreams {
		c := harness.DialLocal(t, locals[0])
		held = append(held, c)
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(make([]byte, 1)); err != nil {
			t.Fatalf("forwarded connection %d: %v", len(held), err)
		}
	}
	p := burrow.Start(t, "send", "", nil, send...)
	if code := p.WaitExit(t, harness.IOTimeout); code == 0 {
		t.Fatal("send succeeded on a session without a free stream")
	}
	stderr := strings.TrimSpace(p.Stderr.String())
	if !strings.Contains(stderr, "too many streams on this session (limit 3); close some connections") {
		t.Errorf("send printed %q, want the server's reason", stderr)
	}
	if lines := strings.Count(stderr, "\n") + 1; lines != 1 {
		t.Errorf("send printed %d lines, want one:\n%s", lines, stderr)
	}

	for _, c := range held {
		c.Close()
	}
	var code int
	for deadline := time.Now().Add(harness.IOTimeout); time.Now().Before(deadline); {
		// The server counts the closed streams free once their splices end.
		p = burrow.Start(t, "send", "", nil, send...)
		if code = p.WaitExit(t, harness.IOTimeout); code == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code != 0 {
		t.Fatalf("send with the streams free again: exit %d\n%s", code, p.Stderr.String())
	}
	if got, err := os.ReadFile(filepath.Join(fsrv.root, "inbox", "f")); err != nil || string(got) != "payload" {
		t.Fatalf("the file sent: %q, %v", got, err)
	}
	if client.Exited() {
		t.Fatal("the client exited")
	}
}

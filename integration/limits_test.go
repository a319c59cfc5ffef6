package integration

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/burrowtun/burrow/integration/harness"
)

// --max-sessions, end to end: with the server at its maximum, a command
// that needs a session of its own is refused at once with the reason
// and a non-zero exit, the session already open keeps working, and once
// it ends the same command goes through.
func TestMaxSessionsFlag(t *testing.T) {
	fsrv := newFileServer(t, "--max-sessions", "1")
	echo := harness.StartEcho(t)
	client, locals := burrow.StartClient(t, fsrv.URL, harness.TestUser+":"+harness.TestPass,
		[]string{"--fingerprint", fsrv.Cert.Fingerprint}, "127.0.0.1:0:"+echo)

	_, msg := runFailing(t, fsrv.env(), "ls", fsrv.URL)
	if !strings.Contains(msg, "the server has its maximum of 1 sessions; retry later") {
		t.Errorf("ls with the server at --max-sessions: %q, want the reason", msg)
	}
	harness.EchoRoundTrip(t, locals[0], []byte("the open session still works"))
	m := scrapeMetrics(t, fsrv.admin)
	if n := m.value("burrow_sessions"); n != 1 {
		t.Errorf("burrow_sessions = %v, want 1", n)
	}

	client.Kill(t)
	fsrv.WaitLog(t, regexp.MustCompile(`msg="session closed"`), harness.IOTimeout)
	p := burrow.Start(t, "ls", "", fsrv.env(), "ls", fsrv.URL)
	if code := p.WaitExit(t, harness.ExitTimeout); code != 0 {
		t.Fatalf("ls once the session ended: exit %d\n%s", code, p.Stderr.String())
	}
}

// --max-transfers, end to end: with one transfer in progress and the
// server at its maximum of one, another send is refused at once with the
// reason and a non-zero exit; the first completes, and then the same send
// goes through.
func TestMaxTransfersFlag(t *testing.T) {
	fsrv := newFileServer(t, "--max-transfers", "1")
	src := filepath.Join(t.TempDir(), "small.txt")
	if err := os.WriteFile(src, []byte("a small file\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// A send from stdin that stays in progress while the pipe is open.
	pr, pw := io.Pipe()
	defer pw.Close()
	held := burrow.StartIn(t, "send-stdin", pr, fsrv.env(), "send", "--json", "--to", "held.bin", fsrv.URL, "-")
	payload := bytes.Repeat([]byte("held open "), 1<<16)
	wrote := make(chan error, 1)
	go func() {
		_, err := pw.Write(payload)
		wrote <- err
	}()
	deadline := time.Now().Add(harness.IOTimeout)
	for !strings.Contains(held.Stdout.String(), `"event":"plan"`) { // --json: on stdout
		if held.Exited() || time.Now().After(deadline) {
			t.Fatalf("the stdin send never reported its plan:\n%s\n%s", held.Stdout.String(), held.Stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}

	msg := fsrv.failTransfer(t, "send", []string{"--to", "inbox"}, src)
	if !strings.Contains(msg, "the server is busy with 1 transfers; try again later") {
		t.Errorf("send with the server at --max-transfers: %q, want the reason", msg)
	}

	// Closing the pipe under a Write in progress would cut the payload
	// short: the send reads all of it first.
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(transferTimeout):
		t.Fatal("the stdin send stopped reading its input")
	}
	pw.Close() // the stdin send ends and commits
	if code := held.WaitExit(t, transferTimeout); code != 0 {
		t.Fatalf("the stdin send: exit %d\n%s", code, held.Stderr.String())
	}
	if got, err := os.ReadFile(filepath.Join(fsrv.root, "held.bin")); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("held.bin: %d bytes, %v; want the %d bytes sent", len(got), err, len(payload))
	}
	fsrv.transfer(t, "send", []string{"--to", "inbox"}, src)
	if got, err := os.ReadFile(filepath.Join(fsrv.root, "inbox", "small.txt")); err != nil || string(got) != "a small file\n" {
		t.Fatalf("inbox/small.txt once the first transfer ended: %q, %v", got, err)
	}
}

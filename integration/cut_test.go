package integration

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/burrowtun/burrow/integration/harness"
)

// A forwarded connection whose session dies must end as a cut
// connection does: with a reset, so that an application that reads until
// the end (a download without a length, an upload the far end takes
// whole) does not take what it got for all there was. A clean end stays
// a FIN, after every byte.

const (
	cutRuns     = 20
	cutFullSize = 1 << 20 // the complete transfers
	// cutMidway is how much of a transfer must have arrived before its
	// session is killed: it is under way, and far from any end.
	cutMidway = 64 << 10
	// cutPace paces the endless transfers, 32 KiB at a time: about 16 MB/s
	// at most, so that a run does not fill the machine's time.
	cutChunk = 32 << 10
	cutPace  = 2 * time.Millisecond
	// cutCap ends an endless transfer nobody cut, cleanly: the test then
	// fails saying that the cut was not seen.
	cutCap = 30 * time.Second
)

// startCutHTTP starts an HTTP/1.0 target that ends each response by
// closing the connection, with no Content-Length: the end of the
// connection is the end of the body, as for many downloads, so a FIN
// after a cut looks like a complete file. GET /full sends cutFullSize
// bytes of faultPayload(7) and closes; GET /reset sends cutMidway of them
// and resets the connection; any other path sends the same bytes without
// end, paced, until the connection fails.
func startCutHTTP(t *testing.T) string {
	return harness.StartTarget(t, func(c *net.TCPConn) {
		c.SetReadDeadline(time.Now().Add(harness.IOTimeout))
		r := bufio.NewReader(io.LimitReader(c, 16<<10))
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		for range 64 {
			h, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if strings.TrimSpace(h) == "" {
				break
			}
		}
		if _, err := io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"); err != nil {
			return
		}
		body := faultPayload(7)
		if strings.HasPrefix(line, "GET /reset ") {
			// A target that fails mid-response: it resets its connection.
			io.Copy(c, io.LimitReader(body, cutMidway))
			c.SetLinger(0)
			return
		}
		if strings.HasPrefix(line, "GET /full ") {
			io.Copy(c, io.LimitReader(body, cutFullSize))
			c.CloseWrite()
			io.Copy(io.Discard, c) // until curl closes: a close now could reset
			return
		}
		c.SetWriteDeadline(time.Now().Add(cutCap + harness.IOTimeout))
		buf := make([]byte, cutChunk)
		for end := time.Now().Add(cutCap); time.Now().Before(end); {
			io.ReadFull(body, buf)
			if _, err := c.Write(buf); err != nil {
				return
			}
			time.Sleep(cutPace)
		}
	})
}

// cutSink is a target that reads uploads: each connection's end (nil for
// EOF, or the read's error) and byte count are sent on ends, and what it
// has read so far of the current one is in progress. An upload that
// ends with EOF is answered with "n sha256" and a FIN.
type cutSink struct {
	addr     string
	progress atomic.Int64
	ends     chan cutEnd
}

type cutEnd struct {
	n   int64
	err error
}

func startCutSink(t *testing.T) *cutSink {
	s := &cutSink{ends: make(chan cutEnd, 4)}
	s.addr = harness.StartTarget(t, func(c *net.TCPConn) {
		s.progress.Store(0)
		c.SetDeadline(time.Now().Add(cutCap + harness.IOTimeout))
		h := sha256.New()
		buf := make([]byte, 64<<10)
		var n int64
		var err error
		for {
			var m int
			m, err = c.Read(buf)
			h.Write(buf[:m])
			n += int64(m)
			s.progress.Store(n)
			if err != nil {
				break
			}
		}
		if err == io.EOF {
			err = nil
			fmt.Fprintf(c, "%d %x", n, h.Sum(nil))
			c.CloseWrite()
		}
		select {
		case s.ends <- cutEnd{n, err}:
		default:
		}
	})
	return s
}

// nextEnd returns how the sink's next connection ended.
func (s *cutSink) nextEnd(t *testing.T) cutEnd {
	t.Helper()
	select {
	case e := <-s.ends:
		return e
	case <-time.After(cutCap + 2*harness.IOTimeout):
		t.Fatal("the upload target saw no end of its connection")
		return cutEnd{}
	}
}

// waitProgress waits until more than cutMidway bytes have been seen by
// progress, or what ended reports an end.
func waitProgress(t *testing.T, what string, progress func() int64, ended <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(harness.IOTimeout)
	for progress() < cutMidway {
		select {
		case <-ended:
			t.Fatalf("%s ended after %d bytes, before it was cut", what, progress())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d bytes after %v, want %d", what, progress(), harness.IOTimeout, cutMidway)
		}
	}
}

// curlRun is a curl downloading to a file, with the proxy variables
// cleared.
type curlRun struct {
	out    string
	cmd    *exec.Cmd
	stderr bytes.Buffer
	done   chan struct{}
}

func startCurl(t *testing.T, curl string, args ...string) *curlRun {
	t.Helper()
	r := &curlRun{out: filepath.Join(t.TempDir(), "download"), done: make(chan struct{})}
	r.cmd = exec.Command(curl, append([]string{"-q", "-sS", "--max-time", strconv.Itoa(int((cutCap + harness.IOTimeout) / time.Second)), "-o", r.out}, args...)...)
	r.cmd.Env = append(harness.CleanEnv(), append(clearProxyEnv, "http_proxy=", "HTTP_PROXY=")...)
	r.cmd.Stderr = &r.stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("curl: %v", err)
	}
	go func() { r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		syscall.Kill(r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.done
	})
	return r
}

func (r *curlRun) size() int64 {
	fi, err := os.Stat(r.out)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// wait waits for curl to exit and returns its exit code.
func (r *curlRun) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-r.done:
		return r.cmd.ProcessState.ExitCode()
	case <-time.After(cutCap + 2*harness.IOTimeout):
		t.Fatalf("curl still running %v after its session was cut", cutCap+2*harness.IOTimeout)
		return -1
	}
}

// fullDownload downloads /full through addr and checks every byte.
func fullDownload(t *testing.T, curl, addr string, want [32]byte) {
	t.Helper()
	r := startCurl(t, curl, "http://"+addr+"/full")
	if code := r.wait(t); code != 0 {
		t.Fatalf("complete download through %s: curl exited %d: %s", addr, code, r.stderr.String())
	}
	got, err := os.ReadFile(r.out)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != cutFullSize || sha256.Sum256(got) != want {
		t.Fatalf("complete download through %s: %d bytes, sha256 %x; want %d bytes, sha256 %x", addr, len(got), sha256.Sum256(got), cutFullSize, want)
	}
}

// fullUpload sends cutFullSize bytes to the sink through addr, half-closes,
// and checks the count and hash the sink answers and that it saw EOF.
func fullUpload(t *testing.T, addr string, sink *cutSink) {
	t.Helper()
	c := harness.DialLocal(t, addr)
	defer c.Close()
	payload := make([]byte, cutFullSize)
	io.ReadFull(faultPayload(8), payload)
	got, err := harness.Exchange(c, payload)
	want := fmt.Sprintf("%d %s", cutFullSize, hex.EncodeToString(func() []byte { s := sha256.Sum256(payload); return s[:] }()))
	if err != nil || string(got) != want {
		t.Fatalf("complete upload through %s: the target answered %q, %v; want %q", addr, got, err, want)
	}
	if e := sink.nextEnd(t); e.err != nil || e.n != cutFullSize {
		t.Fatalf("complete upload through %s: the target read %d bytes, then %v; want %d and EOF", addr, e.n, e.err, cutFullSize)
	}
}

// startUpload writes to addr without end, paced, until the connection
// fails or cutCap.
func startUpload(t *testing.T, addr string) <-chan struct{} {
	t.Helper()
	c := harness.DialLocal(t, addr)
	c.SetDeadline(time.Now().Add(cutCap + harness.IOTimeout))
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		defer c.Close()
		body := faultPayload(9)
		buf := make([]byte, cutChunk)
		for end := time.Now().Add(cutCap); time.Now().Before(end); {
			io.ReadFull(body, buf)
			if _, err := c.Write(buf); err != nil {
				return
			}
			time.Sleep(cutPace)
		}
	}()
	t.Cleanup(func() { c.Close(); <-ended })
	return ended
}

// TestCutByKill kills the server, or the client, with SIGKILL in the
// middle of a download and of an upload, cutRuns times each, with a
// forward and a reverse remote between curl and an HTTP target, and an
// uploader and an upload target. The side that survives must reset the
// connections it held: curl, downloading a body whose end is the end of
// the connection, exits with a reset or partial-file error (56 or 18),
// never 0, and the upload target reads a reset (ECONNRESET), never EOF.
// Each run first downloads a whole body the way it is about to be cut,
// and every fifth run uploads and downloads one each way: each must
// arrive byte for byte with a clean end.
func TestCutByKill(t *testing.T) {
	t.Parallel()
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed (Debian package curl)")
	}
	web := startCutHTTP(t)
	var full [32]byte
	{
		b := make([]byte, cutFullSize)
		io.ReadFull(faultPayload(7), b)
		full = sha256.Sum256(b)
	}
	cert := burrow.NewCert(t, "localhost", "127.0.0.1")
	authfile := filepath.Join(t.TempDir(), "users.json")
	burrow.NewUser(t, authfile, harness.TestUser, harness.TestPass)

	for _, killed := range []string{"server", "client"} {
		t.Run("kill "+killed, func(t *testing.T) {
			t.Parallel()
			sink := startCutSink(t)
			start := time.Now()
			curls, curlReset, targetReset := 0, 0, 0
			for run := range cutRuns {
				srv := burrow.StartServer(t, cert, authfile, "--reverse")
				client, port, locals := startReverseClient(t, "client", srv, harness.TestUser+":"+harness.TestPass, nil,
					func(port int) []string {
						return []string{"127.0.0.1:0:" + web, "127.0.0.1:0:" + sink.addr, "127.0.0.1:0:socks",
							"R:127.0.0.1:" + strconv.Itoa(port) + ":" + web, "R:127.0.0.1:" + strconv.Itoa(port+1) + ":" + sink.addr}
					})
				fwdWeb, fwdSink, socks := locals[0], locals[1], locals[2]
				revWeb, revSink := "127.0.0.1:"+strconv.Itoa(port), "127.0.0.1:"+strconv.Itoa(port+1)

				// The survivor's application downloads through it and its
				// target takes an upload from across the tunnel.
				victim, survivor, download, upload := srv.Proc, client, fwdWeb, revSink
				if killed == "client" {
					victim, survivor, download, upload = client, srv.Proc, revWeb, fwdSink
				}
				// A clean end delivers every byte, just before the cut.
				fullDownload(t, curl, download, full)
				if run%5 == 0 {
					fullDownload(t, curl, map[string]string{fwdWeb: revWeb, revWeb: fwdWeb}[download], full)
					fullUpload(t, fwdSink, sink)
					fullUpload(t, revSink, sink)
				}
				downloads := []*curlRun{startCurl(t, curl, "http://"+download+"/endless")}
				if killed == "server" {
					// And a SOCKS client of the client.
					downloads = append(downloads, startCurl(t, curl, "--socks5-hostname", socks, "http://"+web+"/endless"))
				}
				ul := startUpload(t, upload)
				for _, d := range downloads {
					waitProgress(t, "the download", d.size, d.done)
				}
				waitProgress(t, "the upload", sink.progress.Load, ul)
				victim.Kill(t)

				end := sink.nextEnd(t)
				for i, d := range downloads {
					code := d.wait(t)
					via := "a forward"
					if i > 0 {
						via = "SOCKS"
					}
					if run == 0 {
						t.Logf("curl through %s after the kill: exit %d after %d bytes: %s", via, code, d.size(), strings.TrimSpace(d.stderr.String()))
					}
					curls++
					if code == 56 || code == 18 {
						curlReset++
						continue
					}
					t.Errorf("run %d: curl downloading through %s of the %s exited %d after %d bytes (%s); want 56 or 18, a reset or a partial file",
						run, via, survivor.Name, code, d.size(), strings.TrimSpace(d.stderr.String()))
				}
				if run == 0 {
					t.Logf("the upload target after the kill: %v after %d bytes", end.err, end.n)
				}
				if errors.Is(end.err, syscall.ECONNRESET) {
					targetReset++
				} else {
					t.Errorf("run %d: the upload target behind the %s read %d bytes, then %v; want a reset (ECONNRESET)",
						run, survivor.Name, end.n, end.err)
				}
				survivor.Kill(t)
			}
			t.Logf("%d runs in %v: curl saw a reset in %d of %d downloads, the upload target in %d of %d uploads", cutRuns,
				time.Since(start).Round(time.Millisecond), curlReset, curls, targetReset, cutRuns)
		})
	}
}

// TestCutByTarget has the target reset its connection mid-response,
// through a forward and a reverse remote, cutRuns/2 times each: the
// splice next to the target resets the stream, and the one next to curl
// its connection, so curl exits 56 (a reset) and not 0 with what came.
func TestCutByTarget(t *testing.T) {
	t.Parallel()
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed (Debian package curl)")
	}
	web := startCutHTTP(t)
	srv := burrow.StartTestServer(t, nil, "--reverse")
	_, port, locals := startReverseClient(t, "client", srv, harness.TestUser+":"+harness.TestPass, nil,
		func(port int) []string {
			return []string{"127.0.0.1:0:" + web, "R:127.0.0.1:" + strconv.Itoa(port) + ":" + web}
		})
	for _, via := range []struct{ name, addr string }{{"forward", locals[0]}, {"reverse remote", "127.0.0.1:" + strconv.Itoa(port)}} {
		resets := 0
		for run := range cutRuns / 2 {
			d := startCurl(t, curl, "http://"+via.addr+"/reset")
			code := d.wait(t)
			if code == 56 || code == 18 {
				resets++
			} else {
				t.Errorf("run %d: curl through the %s to a target that reset exited %d after %d bytes (%s); want 56 or 18",
					run, via.name, code, d.size(), strings.TrimSpace(d.stderr.String()))
			}
			if run == 0 {
				t.Logf("through the %s: curl exited %d after %d bytes: %s", via.name, code, d.size(), strings.TrimSpace(d.stderr.String()))
			}
		}
		t.Logf("through the %s: a reset in %d of %d runs", via.name, resets, cutRuns/2)
	}
}

// TestCutStdio runs a stdio remote (stdin and stdout as one connection)
// to the HTTP target: a complete response arrives whole and burrow exits
// 0; a download whose session is killed mid-way makes burrow exit
// non-zero, saying that the connection was cut, since the program
// reading its stdout would otherwise take the end of stdout for the end
// of the data.
func TestCutStdio(t *testing.T) {
	t.Parallel()
	web := startCutHTTP(t)
	srv := burrow.StartTestServer(t, nil)
	stdio := func(t *testing.T, path string) (*harness.Proc, *os.File) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close() })
		cmd := exec.Command(burrow.Path(), "client", "--fingerprint", srv.Cert.Fingerprint, srv.URL, "stdio:"+web)
		cmd.Env = append(harness.CleanEnv(), "BURROW_AUTH="+harness.TestUser+":"+harness.TestPass)
		cmd.Stdin = r
		p := harness.StartCmd(t, "stdio client", cmd, 0)
		r.Close()
		if _, err := fmt.Fprintf(w, "GET %s HTTP/1.0\r\n\r\n", path); err != nil {
			t.Fatal(err)
		}
		return p, w
	}

	t.Run("complete", func(t *testing.T) {
		p, stdin := stdio(t, "/full")
		stdin.Close()
		if code := p.WaitExit(t, harness.IOTimeout); code != 0 {
			t.Fatalf("burrow exited %d after a complete response: %s", code, p.Stderr.String())
		}
		want := make([]byte, cutFullSize)
		io.ReadFull(faultPayload(7), want)
		_, body, _ := strings.Cut(p.Stdout.String(), "\r\n\r\n")
		if len(body) != cutFullSize || body != string(want) {
			t.Fatalf("stdout held a body of %d bytes, want the %d sent", len(body), cutFullSize)
		}
	})

	t.Run("session killed", func(t *testing.T) {
		p, _ := stdio(t, "/endless")
		waitProgress(t, "the stdio download", func() int64 { return int64(p.Stdout.Len()) }, p.Done())
		srv.Kill(t)
		code := p.WaitExit(t, harness.ExitTimeout)
		_, other := harness.StderrLines(p)
		if code == 0 || len(other) != 1 || !strings.Contains(other[0], "the connection was cut after") {
			t.Fatalf("burrow exited %d after its session was killed mid-download, saying %q; want non-zero and one line saying the connection was cut", code, other)
		}
		t.Logf("%s", other[0])
	})
}

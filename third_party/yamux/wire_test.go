package yamux_test

// Burrow's test, not upstream's (see PATCHES.md): the patched copy must
// write the same bytes as the released v0.1.2 did. A scripted peer drives
// a session through every kind of frame, each step waiting for what the
// step before made the session write, so that the frames are the same on
// every run. Their bytes, and the peer's, are compared with a transcript
// that the unpatched v0.1.2 wrote (testdata/wire-v0.1.2.golden, made with
// -update on Burrow's commit that vendored the copy unchanged).

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/wire-v0.1.2.golden from this yamux's output")

const wireGolden = "testdata/wire-v0.1.2.golden"

// Frame types and flags, as spec.md gives them.
const (
	wData, wUpdate, wPing, wGoAway = 0, 1, 2, 3
	wSYN, wACK, wFIN, wRST         = 1, 2, 4, 8
)

// wireFrame is one frame on the wire: header and body.
type wireFrame struct {
	hdr  [12]byte
	body []byte
}

func newFrame(typ byte, flags uint16, id, length uint32, body []byte) wireFrame {
	var f wireFrame
	f.hdr[1] = typ
	binary.BigEndian.PutUint16(f.hdr[2:], flags)
	binary.BigEndian.PutUint32(f.hdr[4:], id)
	binary.BigEndian.PutUint32(f.hdr[8:], length)
	f.body = body
	return f
}

// String is the frame's header in hex, by field, and its body: in hex
// when short, else its length and SHA-256.
func (f wireFrame) String() string {
	h := f.hdr
	s := fmt.Sprintf("%02x %02x %04x %08x %08x", h[0], h[1], binary.BigEndian.Uint16(h[2:]),
		binary.BigEndian.Uint32(h[4:]), binary.BigEndian.Uint32(h[8:]))
	switch {
	case f.body == nil:
	case len(f.body) <= 32:
		s += fmt.Sprintf(" +%x", f.body)
	default:
		s += fmt.Sprintf(" +%d bytes sha256 %x", len(f.body), sha256.Sum256(f.body))
	}
	return s
}

// readFrame reads one frame; a data frame's body follows its header.
func readFrame(r io.Reader) (wireFrame, error) {
	var f wireFrame
	if _, err := io.ReadFull(r, f.hdr[:]); err != nil {
		return f, err
	}
	if f.hdr[1] == wData {
		if n := binary.BigEndian.Uint32(f.hdr[8:]); n > 0 {
			f.body = make([]byte, n)
			if _, err := io.ReadFull(r, f.body); err != nil {
				return f, err
			}
		}
	}
	return f, nil
}

// wirePeer is the scripted far end of a session, and the transcript of
// what went each way.
type wirePeer struct {
	t       *testing.T
	conn    net.Conn
	frames  chan wireFrame // what the session wrote, in order; closed at its end
	readErr error          // why frames was closed
	lines   []string
}

func newWirePeer(t *testing.T, conn net.Conn) *wirePeer {
	p := &wirePeer{t: t, conn: conn, frames: make(chan wireFrame, 64)}
	go func() {
		defer close(p.frames)
		for {
			f, err := readFrame(conn)
			if err != nil {
				p.readErr = err
				return
			}
			p.frames <- f
		}
	}()
	return p
}

func (p *wirePeer) step(format string, args ...any) {
	p.lines = append(p.lines, "# "+fmt.Sprintf(format, args...))
}

// send writes f to the session.
func (p *wirePeer) send(f wireFrame) {
	p.t.Helper()
	p.lines = append(p.lines, "< "+f.String())
	p.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := p.conn.Write(append(f.hdr[:], f.body...)); err != nil {
		p.t.Fatalf("peer writing %v: %v", f, err)
	}
}

// expect waits for the next frame the session writes.
func (p *wirePeer) expect() wireFrame {
	p.t.Helper()
	select {
	case f, ok := <-p.frames:
		if !ok {
			p.t.Fatalf("the session's connection ended (%v) where a frame was expected; so far:\n%s", p.readErr, strings.Join(p.lines, "\n"))
		}
		p.lines = append(p.lines, "> "+f.String())
		return f
	case <-time.After(5 * time.Second):
		p.t.Fatalf("no frame from the session within 5 s; so far:\n%s", strings.Join(p.lines, "\n"))
		return wireFrame{}
	}
}

// async runs f on a goroutine; wait returns its error.
func async(f func() error) (wait func(*testing.T)) {
	done := make(chan error, 1)
	go func() { done <- f() }()
	return func(t *testing.T) {
		t.Helper()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a session call did not return within 5 s")
		}
	}
}

// pattern is n bytes that differ from one another's neighbours.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7+i/251)
	}
	return b
}

// wireScript drives a session started by start through every frame kind
// and returns the transcript.
func wireScript(t *testing.T, role string, start func(io.ReadWriteCloser, *yamux.Config) (*yamux.Session, error)) []string {
	a, b := net.Pipe()
	defer b.Close()
	cfg := yamux.DefaultConfig()
	cfg.AcceptBacklog = 1
	cfg.EnableKeepAlive = false
	cfg.StreamOpenTimeout = 0
	cfg.LogOutput = io.Discard
	sess, err := start(a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	p := newWirePeer(t, b)
	own, peer := uint32(1), uint32(2) // the session's stream ids, and the peer's
	if role == "server" {
		own, peer = 2, 1
	}
	p.step("yamux.%s, AcceptBacklog 1, default windows", strings.ToUpper(role[:1])+role[1:])

	p.step("the session opens a stream and writes before it is acknowledged")
	var st *yamux.Stream
	wait := async(func() (err error) { st, err = sess.OpenStream(); return err })
	p.expect()
	wait(t)
	wait = async(func() error { _, err := st.Write([]byte("hello")); return err })
	p.expect()
	wait(t)

	p.step("the peer acknowledges and answers; 5 bytes read grant no credit")
	p.send(newFrame(wUpdate, wACK, own, 0, nil))
	p.send(newFrame(wData, 0, own, 5, []byte("world")))
	buf := make([]byte, 300000)
	if _, err := io.ReadFull(st, buf[:5]); err != nil || string(buf[:5]) != "world" {
		t.Fatalf("read %q, %v", buf[:5], err)
	}

	p.step("200000 bytes in one frame, read at once, grant credit")
	big := pattern(200000, 1)
	p.send(newFrame(wData, 0, own, uint32(len(big)), big))
	if _, err := io.ReadFull(st, buf[:len(big)]); err != nil || string(buf[:len(big)]) != string(big) {
		t.Fatalf("reading 200000 bytes: %v", err)
	}
	p.expect()

	p.step("the session writes more than its send window, and waits for credit")
	more := pattern(300000, 2)
	wait = async(func() error { _, err := st.Write(more); return err })
	f := p.expect()
	p.send(newFrame(wUpdate, 0, own, uint32(len(f.body)), nil))
	p.expect()
	wait(t)

	p.step("the session pings the peer, which answers")
	wait = async(func() error { _, err := sess.Ping(); return err })
	ping := p.expect()
	p.send(newFrame(wPing, wACK, 0, binary.BigEndian.Uint32(ping.hdr[8:]), nil))
	wait(t)

	p.step("the peer pings the session, twice")
	p.send(newFrame(wPing, wSYN, 0, 0x01020304, nil))
	p.expect()
	p.send(newFrame(wPing, wSYN, 0, 0xfffffffe, nil))
	p.expect()

	p.step("the session half-closes its stream, then the peer")
	wait = async(st.Close)
	p.expect()
	wait(t)
	p.send(newFrame(wUpdate, wFIN, own, 0, nil))
	if _, err := st.Read(buf); err != io.EOF {
		t.Fatalf("read after both FINs: %v, want EOF", err)
	}

	p.step("the peer opens a stream, the session accepts it and answers")
	p.send(newFrame(wUpdate, wSYN, peer, 0, nil))
	var in *yamux.Stream
	wait = async(func() (err error) { in, err = sess.AcceptStream(); return err })
	p.expect()
	wait(t)
	p.send(newFrame(wData, 0, peer, 5, []byte("ping?")))
	if _, err := io.ReadFull(in, buf[:5]); err != nil {
		t.Fatal(err)
	}
	wait = async(func() error { _, err := in.Write([]byte("pong!")); return err })
	p.expect()
	wait(t)

	p.step("with its backlog of 1 full, the session refuses the next stream")
	p.send(newFrame(wUpdate, wSYN, peer+2, 0, nil))
	p.send(newFrame(wUpdate, wSYN, peer+4, 0, nil))
	p.expect()
	wait = async(func() error { _, err := sess.AcceptStream(); return err })
	p.expect()
	wait(t)

	p.step("the peer resets a stream; data for a stream it never opened is dropped")
	p.send(newFrame(wUpdate, wRST, peer, 0, nil))
	if _, err := in.Read(buf); !errors.Is(err, yamux.ErrConnectionReset) {
		t.Fatalf("read after RST: %v, want %v", err, yamux.ErrConnectionReset)
	}
	p.send(newFrame(wData, 0, 999, 3, []byte("xyz")))

	p.step("the session goes away; a stream the peer opens after is refused")
	wait = async(sess.GoAway)
	p.expect()
	wait(t)
	p.send(newFrame(wUpdate, wSYN, peer+6, 0, nil))
	p.expect()

	p.step("the session closes")
	if err := sess.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case f, ok := <-p.frames:
		if ok {
			p.lines = append(p.lines, "> "+f.String())
			t.Errorf("the session wrote %v as it closed", f)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the connection stayed open after Close")
	}
	p.lines = append(p.lines, "> end of connection")
	return p.lines
}

// TestWireGolden runs wireScript as a client and as a server and compares
// the transcripts with what v0.1.2 wrote.
func TestWireGolden(t *testing.T) {
	var got []string
	got = append(got, wireScript(t, "client", yamux.Client)...)
	got = append(got, wireScript(t, "server", yamux.Server)...)
	text := strings.Join(got, "\n") + "\n"
	if *updateGolden {
		if err := os.WriteFile(wireGolden, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(wireGolden)
	if err != nil {
		t.Fatal(err)
	}
	if text == string(want) {
		return
	}
	gl, wl := strings.Split(text, "\n"), strings.Split(string(want), "\n")
	n := len(gl)
	if len(wl) > n {
		n = len(wl)
	}
	for i := 0; i < n; i++ {
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w {
			t.Fatalf("transcript differs from %s at line %d:\n got: %s\nwant: %s\n\nwhole transcript:\n%s", wireGolden, i+1, g, w, text)
		}
	}
}

// TestResetWire checks the frame Stream.Reset writes (patch 6): the RST
// that v0.1.2 already sends for a stream it refuses or whose close times
// out, a window update with flag RST and length 0, and nothing for a
// stream reset again. Frames the peer sends for the stream afterwards
// are dropped, and the session carries on.
func TestResetWire(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	cfg := yamux.DefaultConfig()
	cfg.EnableKeepAlive = false
	cfg.LogOutput = io.Discard
	sess, err := yamux.Client(a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	p := newWirePeer(t, b)
	var st *yamux.Stream
	wait := async(func() (err error) { st, err = sess.OpenStream(); return err })
	p.expect()
	wait(t)
	p.send(newFrame(wUpdate, wACK, 1, 0, nil))
	wait = async(st.Reset)
	if got, want := p.expect().String(), newFrame(wUpdate, wRST, 1, 0, nil).String(); got != want {
		t.Fatalf("Reset wrote %s, want %s", got, want)
	}
	wait(t)
	wait = async(st.Reset)
	wait(t)
	p.send(newFrame(wData, 0, 1, 3, []byte("xyz")))
	p.send(newFrame(wUpdate, wFIN, 1, 0, nil))
	wait = async(func() error { _, err := sess.Ping(); return err })
	ping := p.expect()
	if ping.hdr[1] != wPing {
		t.Fatalf("after a second Reset the session wrote %s, want only its ping", ping)
	}
	p.send(newFrame(wPing, wACK, 0, binary.BigEndian.Uint32(ping.hdr[8:]), nil))
	wait(t)
}

package transfer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// startPush plays a client up to the plan: Hello, manifest, plan. The
// transfer then waits, planned and admitted, for finishPush.
func startPush(t *testing.T, h *harness, hl hello, entries []Entry) (*conn, planEnd, error) {
	t.Helper()
	hl.op = opPush
	if hl.chunkSize == 0 {
		hl.chunkSize = MinChunkSize
	}
	if hl.streams == 0 {
		hl.streams = 1
	}
	rw, err := h.open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cc := newConn(context.Background(), rw, 10*time.Second)
	t.Cleanup(cc.close)
	if err := cc.send(frameHello, func(e *enc) { encodeHello(e, &hl) }); err != nil {
		return nil, planEnd{}, err
	}
	var pe planEnd
	err = cc.writeWhile(func() error {
		return writeManifest(cc, entries, &manifestEnd{count: uint64(len(entries))})
	}, func() (err error) {
		_, pe, err = readPlan(cc, nil)
		return err
	})
	return cc, pe, err
}

// finishPush sends file 0 on one data stream, then Done.
func finishPush(t *testing.T, h *harness, cc *conn, pe planEnd, data []byte) error {
	t.Helper()
	rw, err := h.open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	dc := newConn(context.Background(), rw, 10*time.Second)
	defer dc.close()
	werr := make(chan error, 1)
	go func() {
		err := dc.send(frameHello, func(e *enc) { encodeHello(e, &hello{op: opData, id: pe.id}) })
		if err == nil {
			err = sendFile(dc, 0, data, MinChunkSize)
		}
		if err == nil {
			err = dc.send(frameEnd, nil)
		}
		werr <- err
	}()
	for {
		typ, _, err := dc.recv()
		if err != nil {
			return err
		}
		if typ == frameEnd {
			break
		}
	}
	if err := <-werr; err != nil {
		return err
	}
	if err := cc.send(frameDone, nil); err != nil {
		return err
	}
	_, err = cc.expect(frameEnd)
	return err
}

// TestQuotaConcurrentSends: two sends of the same user, each within the
// quota on its own, were both accepted when the second planned while the
// first was under way: each measured the files already there, not what
// the other had been allowed to add, and together they passed the quota
// (up to the transfers-per-user limit times over).
func TestQuotaConcurrentSends(t *testing.T) {
	t.Parallel()
	const quota = 100 << 10
	h := newHarness(t, ServerConfig{}, Endpoint{Write: true, MaxBytes: quota})
	a, b := randBytes(1, 60<<10), randBytes(2, 60<<10)
	ca, pa, err := startPush(t, h, hello{}, []Entry{fileEntry("a", int64(len(a)))})
	if err != nil {
		t.Fatal(err)
	}
	cb, pb, err := startPush(t, h, hello{}, []Entry{fileEntry("b", int64(len(b)))})
	if err == nil {
		err = finishPush(t, h, cb, pb, b)
	}
	if !errors.Is(err, ErrQuota) {
		t.Errorf("second send: got %v, want it refused for the quota the first holds", err)
	}
	if err := finishPush(t, h, ca, pa, a); err != nil {
		t.Fatal(err)
	}
	used, _, err := usage(mustOpenRoot(t, h.ep.Root))
	if err != nil {
		t.Fatal(err)
	}
	if used > quota {
		t.Errorf("%d bytes stored, over the quota of %d", used, quota)
	}
	// Once the first send ended, its hold is gone: what fits is taken.
	cb, pb, err = startPush(t, h, hello{}, []Entry{fileEntry("b", 30<<10)})
	if err == nil {
		err = finishPush(t, h, cb, pb, b[:30<<10])
	}
	if err != nil {
		t.Errorf("a send that fits after the first ended: %v", err)
	}
}

func mustOpenRoot(t *testing.T, dir string) *os.Root {
	t.Helper()
	r, err := os.OpenRoot(filepath.Clean(dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

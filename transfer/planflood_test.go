package transfer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestPlanFlood: a fetching client that answers the manifest with plan
// records without end (here the same skip, again and again) is refused
// at the first record the manifest does not allow, instead of having the
// server keep every record in memory until the plan ends.
func TestPlanFlood(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, ServerConfig{Limits: Limits{IdleTimeout: 3 * time.Second}}, Endpoint{Root: root, Read: true, Write: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rw, err := h.open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cc := newConn(ctx, rw, 10*time.Second)
	defer cc.close()
	hl := hello{op: opPull, chunkSize: MinChunkSize, streams: 1, paths: []string{"f"}}
	if err := cc.send(frameHello, func(e *enc) { encodeHello(e, &hl) }); err != nil {
		t.Fatal(err)
	}
	lim := Limits{}.withDefaults()
	if _, err := readManifest(cc, &lim, nil); err != nil {
		t.Fatal(err)
	}
	var e enc
	for len(e.b)+6 <= maxControlFrame {
		encodePlanRec(&e, &planRec{file: 0, action: planSkip, reason: skipIdentical})
	}
	const frames = 8 // without PlanEnd: only a refusal answers
	err = cc.writeWhile(func() error {
		for range frames {
			if err := cc.send(framePlan, func(x *enc) { x.raw(e.b) }); err != nil {
				return nil // refused meanwhile; the reader has the reason
			}
		}
		return nil
	}, func() error {
		_, err := cc.expect(frameEnd)
		return err
	})
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("got %v, want the plan refused as a protocol error", err)
	}
	t.Logf("refused: %v", err)
	checkStillServing(t, h)
}

package transfer

import (
	"errors"
	"testing"
)

// TestBufferBudget: each data stream holds up to two chunk-sized buffers,
// and each transfer chose its chunk size (up to 16 MiB) and asked for its
// streams (up to 16): with 64 transfers, the defaults let clients make the
// server hold 32 GiB. The streams a transfer is granted now come out of a
// budget for the whole server, 1 GiB by default; past it, a transfer gets
// fewer streams, or is told the server is busy.
func TestBufferBudget(t *testing.T) {
	t.Parallel()
	h := newHarness(t, ServerConfig{}, Endpoint{Write: true})
	const cs = 16 << 20
	var held int64
	for i := range 3 {
		_, pe, err := startPush(t, h, hello{chunkSize: cs, streams: 16}, nil)
		if err != nil {
			if !errors.Is(err, ErrBusy) {
				t.Fatalf("transfer %d: %v", i, err)
			}
			t.Logf("transfer %d refused: %v", i, err)
			continue
		}
		t.Logf("transfer %d: %d streams", i, pe.streams)
		held += int64(pe.streams) * 2 * cs
	}
	if held > DefaultBufferBudget {
		t.Errorf("the server granted streams holding up to %d MiB, over its budget of %d MiB", held>>20, DefaultBufferBudget>>20)
	}
}

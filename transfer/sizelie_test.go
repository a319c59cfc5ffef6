package transfer

import (
	"errors"
	"math"
	"testing"
)

// TestSizeNearInt64Max: a file declared a few bytes short of 2^63 once
// made the chunk count overflow to a negative number, which passed the
// chunks-per-file limit and then marked the file as a stream of unknown
// length: its data escaped the plan's quota and free-space checks (two
// such files also wrapped the bytes needed around to a small number).
func TestSizeNearInt64Max(t *testing.T) {
	t.Parallel()
	for _, cs := range []int{MinChunkSize, 4 << 20} {
		if n := chunkCount(math.MaxInt64, cs); n <= maxChunksPerFile {
			t.Errorf("chunkCount(MaxInt64, %d) = %d", cs, n)
		}
	}
	_, root := hostileSetup(t)
	h := newHarness(t, ServerConfig{}, Endpoint{Root: root, Read: true, Write: true, MaxBytes: 1 << 20})
	payload := []byte("more than the quota allows, in the end")
	err := rawPush(t, h, hello{dest: "inbox"},
		[]Entry{fileEntry("a", math.MaxInt64), fileEntry("b", math.MaxInt64)},
		func(c *conn) error { return sendRawChunk(c, rawChunk{file: 0, index: 0, data: payload}) })
	if !errors.Is(err, ErrLimit) {
		t.Fatalf("got %v, want the manifest refused for its sizes", err)
	}
	if p := partials(t, root); len(p) != 0 {
		t.Errorf("wrote %v", p)
	}
	checkStillServing(t, h)
}

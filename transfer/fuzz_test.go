package transfer

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Fuzz targets for every decoder of peer input. Run one with
//
//	go test -run '^$' -fuzz '^FuzzManifest$' -fuzztime 20s ./transfer/

func encodeEntries(entries ...Entry) []byte {
	var e enc
	for i := range entries {
		encodeEntry(&e, &entries[i])
	}
	return e.b
}

// FuzzManifest decodes a batch of manifest entries and checks the tree:
// whatever is accepted must be safe to create under a root.
func FuzzManifest(f *testing.F) {
	f.Add(encodeEntries(dirEntry("d"), fileEntry("d/f", 10), linkEntry("d/l", "f"), fileEntry("top", 0)))
	f.Add(encodeEntries(fileEntry("../x", 1)))
	f.Add(encodeEntries(fileEntry("/abs", 1)))
	f.Add(encodeEntries(fileEntry("a\x00b", 1)))
	f.Add(encodeEntries(dirEntry("a"), linkEntry("a/l", "../../out"), fileEntry("a/l/x", 1)))
	f.Add(encodeEntries(Entry{Path: "dev", Type: TypeOther}))
	f.Add(encodeEntries(fileEntry("x", -1)))
	f.Add([]byte{0xff, 0xff, 'a'})
	f.Add([]byte{})
	lim := Limits{MaxEntries: 1000}.withDefaults()
	f.Fuzz(func(t *testing.T, p []byte) {
		entries, err := decodeEntries(nil, p, &lim, false)
		if err != nil {
			return
		}
		for _, links := range []LinkPolicy{LinksSkip, LinksKeep} {
			if checkTree(entries, links) != nil {
				continue
			}
			for i := range entries {
				e := &entries[i]
				if checkName(e.Path) != "" || e.Type < TypeFile || e.Type > TypeSymlink {
					t.Fatalf("accepted %+v", e)
				}
				if links == LinksKeep && e.Type == TypeSymlink {
					r := path.Join(path.Dir(e.Path), e.Target)
					if path.IsAbs(e.Target) || r == ".." || strings.HasPrefix(r, "../") {
						t.Fatalf("kept a link out of the tree: %+v", e)
					}
				}
			}
		}
		// What decodes re-encodes to the same bytes.
		if got := encodeEntries(entries...); !bytes.Equal(got, p) && len(entries) > 0 {
			again, err := decodeEntries(nil, got, &lim, false)
			if err != nil || len(again) != len(entries) {
				t.Fatalf("re-encoding changed the entries: %v", err)
			}
		}
		// A listing accepts more, never panics.
		decodeEntries(nil, p, &lim, true)
	})
}

// frameBytes encodes one frame.
func frameBytes(typ byte, payload []byte) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	return append(b, payload...)
}

func payloadOf(fill func(e *enc)) []byte {
	var e enc
	fill(&e)
	return e.b
}

// FuzzFrame reads a stream of frames as a receiver would: framing limits,
// then each payload's decoder, and chunks through decompression and hash
// verification into a sink that checks them against a one-file manifest.
func FuzzFrame(f *testing.F) {
	cs := MinChunkSize
	data := bytes.Repeat([]byte("burrow "), 1000)
	chunk := func(flags byte, d []byte, size int) []byte {
		return payloadOf(func(e *enc) {
			e.b = encodeChunkHeader(e.b, &chunkHeader{flags: flags, size: uint32(size), hash: chunkHash(data)})
			e.raw(d)
		})
	}
	zenc, _ := zstd.NewWriter(nil)
	compressed := zenc.EncodeAll(data, nil)
	bomb := zenc.EncodeAll(make([]byte, 1<<20), nil)
	zenc.Close()
	seeds := [][]byte{
		frameBytes(frameChunk, chunk(0, data, len(data))),
		frameBytes(frameChunk, chunk(chunkZstd, compressed, len(data))),
		frameBytes(frameChunk, chunk(chunkZstd, bomb, len(data))),
		frameBytes(frameChunk, chunk(0, data[:10], len(data))),
		frameBytes(frameFileEnd, payloadOf(func(e *enc) {
			encodeFileEnd(e, &fileEnd{size: uint64(len(data)), root: rootHash(int64(len(data)), cs, []hash{chunkHash(data)})})
		})),
		frameBytes(frameHello, payloadOf(func(e *enc) {
			encodeHello(e, &hello{op: opPull, chunkSize: uint32(cs), streams: 4, paths: []string{"a", "b/c"}})
		})),
		frameBytes(frameHello, payloadOf(func(e *enc) { encodeHello(e, &hello{op: opPush, dest: "in", chunkSize: 1 << 22}) })),
		frameBytes(framePlan, payloadOf(func(e *enc) {
			encodePlanRec(e, &planRec{file: 0, action: planResume, have: []have{{chunk: 1}}})
			encodePlanRec(e, &planRec{file: 1, action: planCheck})
			encodePlanRec(e, &planRec{file: 2, action: planSkip, reason: skipNewer})
		})),
		frameBytes(framePlan, payloadOf(func(e *enc) { e.u32(0); e.u8(planResume); e.u32(1 << 30) })),
		frameBytes(frameWant, payloadOf(func(e *enc) { encodeWant(e, []span{{0, 0, 1}, {3, 2, 1}}) })),
		frameBytes(frameError, payloadOf(func(e *enc) { encodeError(e, &ConflictError{Paths: []string{"a", "b"}, Total: 3}) })),
		frameBytes(frameCommitted, payloadOf(func(e *enc) { encodeCommitted(e, 7, committedSkipped) })),
		frameBytes(frameManifestEnd, payloadOf(func(e *enc) { encodeManifestEnd(e, &manifestEnd{count: 3, streams: 2}) })),
		frameBytes(framePlanEnd, payloadOf(func(e *enc) { encodePlanEnd(e, &planEnd{streams: 2}) })),
		{frameChunk, 0xff, 0xff, 0xff, 0xff},
		{99, 0, 0, 0, 0},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Add(append(append([]byte(nil), seeds[0]...), seeds[4]...))
	lim := Limits{}.withDefaults()
	f.Fuzz(func(t *testing.T, stream []byte) {
		c := newConn(context.Background(), nopCloser{bytes.NewReader(stream)}, time.Second)
		defer c.close()
		c.maxChunk = cs
		b := newStreamBufs(cs, false, 0)
		defer b.close()
		entry := fileEntry("f", int64(len(data)))
		var out bytes.Buffer
		s := &writerSink{w: &out, e: &entry, cs: cs, n: 1, track: newTracker(nil, []Entry{entry})}
		for range 16 {
			typ, p, err := c.recv()
			if err != nil {
				return
			}
			switch typ {
			case frameChunk:
				if _, _, err := recvChunk(b, s, p); err == nil && !bytes.Equal(out.Bytes(), data) {
					t.Fatalf("accepted a chunk that is not the data")
				}
			case frameFileEnd:
				recvEnd(s, p)
			case frameHello:
				decodeHello(p, &lim)
			case frameEntries:
				decodeEntries(nil, p, &lim, false)
			case framePlan:
				if recs, err := decodePlan(nil, p); err == nil {
					snd := newSender([]Entry{entry, fileEntry("g", 1<<30)}, cs, nil)
					snd.setPlan(recs)
				}
			case framePlanEnd:
				decodePlanEnd(p)
			case frameManifestEnd:
				decodeManifestEnd(p)
			case frameWant:
				if spans, err := decodeWant(nil, p); err == nil {
					snd := newSender([]Entry{entry}, cs, nil)
					for _, sp := range spans {
						snd.checkSpan(sp)
					}
				}
			case frameCommitted:
				decodeCommitted(p)
			}
		}
	})
}

type nopCloser struct{ io.Reader }

func (nopCloser) Write(p []byte) (int, error) { return len(p), nil }
func (nopCloser) Close() error                { return nil }

// FuzzJournal parses journal files: a damaged journal only loses chunks.
func FuzzJournal(f *testing.F) {
	e := fileEntry("f", 10*MinChunkSize)
	good := journalHeader(&e, MinChunkSize)
	h := chunkHash([]byte("x"))
	for i := range uint32(3) {
		good = journalRecord(good, i, &h)
	}
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add(journalRecord(journalHeader(&e, MinChunkSize), 99, &h))
	f.Fuzz(func(t *testing.T, b []byte) {
		for c := range parseJournal(b, &e, MinChunkSize, 10) {
			if c >= 10 {
				t.Fatalf("chunk %d of 10", c)
			}
		}
	})
}

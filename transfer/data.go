package transfer

import (
	"fmt"
	"time"
	"unsafe"

	"github.com/klauspost/compress/zstd"
)

// streamBufs are one data stream's buffers and codecs, reused for every
// chunk it carries.
type streamBufs struct {
	cs int
	// idle is how often a sender that skips resumed chunks says it is
	// still there (a keepalive), so the receiver's timeout does not fire.
	idle time.Duration
	sent time.Time
	buf  []byte // a chunk read from a file
	zbuf []byte // its compressed form
	out  []byte // a decompressed chunk
	zenc *zstd.Encoder
	zdec *zstd.Decoder
}

func newStreamBufs(cs int, compress bool, idle time.Duration) *streamBufs {
	b := &streamBufs{cs: cs, idle: idle / 4, sent: time.Now()}
	if compress {
		// EncodeAll with one goroutine: no background workers.
		b.zenc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithEncoderConcurrency(1), zstd.WithSingleSegment(true))
	}
	return b
}

func (b *streamBufs) close() {
	if b.zenc != nil {
		b.zenc.Close()
	}
	if b.zdec != nil {
		b.zdec.Close()
	}
}

func (b *streamBufs) chunk(cs int) []byte {
	if cap(b.buf) < cs {
		b.buf = make([]byte, cs)
	}
	return b.buf[:cs]
}

// compress returns data zstd-compressed with chunkZstd, or as it is when
// compression is off or would save less than about 3%. Large chunks are
// judged on a sample first, so incompressible data costs little CPU.
func (b *streamBufs) compress(data []byte) ([]byte, byte) {
	if b.zenc == nil {
		return data, 0
	}
	const sample = 64 << 10
	if len(data) >= 4*sample {
		b.zbuf = b.zenc.EncodeAll(data[:sample], b.zbuf[:0])
		if len(b.zbuf) > sample-sample/16 {
			return data, 0
		}
	}
	b.zbuf = b.zenc.EncodeAll(data, b.zbuf[:0])
	if len(b.zbuf) > len(data)-len(data)/32 {
		return data, 0
	}
	return b.zbuf, chunkZstd
}

// decompress expands a compressed chunk that declares size bytes. It never
// produces more than size bytes: a chunk that would is refused as a
// decompression bomb.
func (b *streamBufs) decompress(src []byte, size int) ([]byte, error) {
	if b.zdec == nil {
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecodeAllCapLimit(true), zstd.WithDecoderMaxMemory(uint64(b.cs)),
			zstd.WithDecoderMaxWindow(uint64(max(b.cs, zstd.MinWindowSize))))
		if err != nil {
			return nil, err
		}
		b.zdec = d
	}
	if cap(b.out) < size {
		b.out = alignedBuf(size)
	}
	out, err := b.zdec.DecodeAll(src, b.out[:0:size])
	if err != nil {
		return nil, fmt.Errorf("%w: compressed chunk does not expand to its declared %d bytes: %v", ErrIntegrity, size, err)
	}
	if len(out) != size {
		return nil, fmt.Errorf("%w: compressed chunk expands to %d bytes, it declared %d", ErrIntegrity, len(out), size)
	}
	return b.out[:size], nil // with the buffer's room for padding
}

// dioAlign is the alignment of chunk buffers, in memory and in length:
// direct I/O (useDirect) takes them as they are when its filesystem asks
// for no more.
const dioAlign = 4096

// alignedBuf returns n bytes that start on a dioAlign boundary, with the
// capacity to round n up to one.
func alignedBuf(n int) []byte {
	b := make([]byte, n+2*dioAlign)
	off := alignOffset(b, 0)
	return b[off : off+n : off+roundUp(n, dioAlign)]
}

// alignOffset returns the offset o, 0 <= o < dioAlign, for which b[o+at]
// starts on a dioAlign boundary.
func alignOffset(b []byte, at int) int {
	return (dioAlign - int((uintptr(unsafe.Pointer(unsafe.SliceData(b)))+uintptr(at))%dioAlign)) % dioAlign
}

// isAligned reports whether b starts on a boundary of align bytes
// (a power of two).
func isAligned(b []byte, align int) bool {
	return uintptr(unsafe.Pointer(unsafe.SliceData(b)))%uintptr(align) == 0
}

func roundUp(n, align int) int { return (n + align - 1) / align * align }

// sink is the receiving end of data frames: a receiver writing files, or
// a writer for FetchStream.
type sink interface {
	expect(h *chunkHeader) (name string, err error) // name: the file's, for messages
	write(h *chunkHeader, data []byte, wire int) (file int, status byte, err error)
	end(fe *fileEnd) (file int, status byte, err error)
}

// recvChunk decodes, checks, expands and verifies a Chunk frame, then
// hands it to s.
func recvChunk(b *streamBufs, s sink, p []byte) (int, byte, error) {
	h, data, err := decodeChunk(p, b.cs)
	if err != nil {
		return -1, 0, err
	}
	name, err := s.expect(&h)
	if err != nil {
		return -1, 0, err
	}
	if h.flags&chunkZstd == 0 && len(data) != int(h.size) {
		return -1, 0, fmt.Errorf("%w: chunk %d of %q carries %d bytes but declares %d", ErrIntegrity, h.index, name, len(data), h.size)
	}
	raw := data
	if h.flags&chunkZstd != 0 {
		if raw, err = b.decompress(data, int(h.size)); err != nil {
			return -1, 0, err
		}
	}
	if chunkHash(raw) != h.hash {
		return -1, 0, fmt.Errorf("%w: chunk %d of %q does not match its hash", ErrIntegrity, h.index, name)
	}
	return s.write(&h, raw, len(data))
}

// recvEnd decodes a FileEnd frame and hands it to s.
func recvEnd(s sink, p []byte) (int, byte, error) {
	fe, err := decodeFileEnd(p)
	if err != nil {
		return -1, 0, err
	}
	return s.end(&fe)
}

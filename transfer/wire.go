package transfer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// ProtocolVersion is the version carried in every Hello.
const ProtocolVersion = 1

var helloMagic = [4]byte{'B', 'R', 'W', 'T'}

// Frame types. Values are part of the wire format: never renumber.
const (
	frameHello       byte = 1  // client: first frame on every stream
	frameEntries     byte = 2  // a batch of manifest or listing entries
	frameManifestEnd byte = 3  // end of a manifest: count (and, in a pull, transfer id)
	framePlan        byte = 4  // a batch of plan records
	framePlanEnd     byte = 5  // end of a plan (in a push: transfer id, streams)
	frameChunk       byte = 6  // one chunk of file data
	frameFileEnd     byte = 7  // all chunks of a file sent: size and whole-file hash
	frameWant        byte = 8  // pull: spans of chunks the client asks for
	frameWantDone    byte = 9  // pull: every chunk of the last Want was sent
	frameCommitted   byte = 10 // push: the server committed (or skipped) a file
	frameEnd         byte = 11 // end of a stream's work; answered with End
	frameDone        byte = 12 // client, on the control stream: all data sent
	frameError       byte = 13 // an error, with a code; the sender closes after it
	frameKeepalive   byte = 14 // nothing; keeps an idle stream's timeout from firing
)

// Operations named by a Hello.
const (
	opList byte = 1
	opPush byte = 2
	opPull byte = 3
	opData byte = 4
)

const (
	frameHeaderLen  = 5       // type (1) | payload length (4)
	maxControlFrame = 1 << 20 // any frame but a chunk
	batchBytes      = 256 << 10
	chunkHeaderLen  = 4 + 4 + 1 + 4 + hashLen
	hashLen         = 32
	maxNameLen      = 255 // bytes in one path component
	maxWantSpans    = 1024
)

// Hello flags.
const (
	flagCompress = 1 << 0
	flagStream   = 1 << 1 // one file of unknown size (push) or to a writer (pull)
)

// Chunk flags.
const chunkZstd = 1 << 0

type hash = [hashLen]byte

type transferID = [16]byte

// hello is the first frame of every stream.
type hello struct {
	op        byte
	flags     byte
	overwrite Overwrite
	links     LinkPolicy
	chunkSize uint32
	streams   uint16
	dest      string   // push: destination directory; list: the path
	paths     []string // pull: the paths to fetch
	id        transferID
}

// enc appends big-endian fields to a buffer.
type enc struct{ b []byte }

func (e *enc) u8(v byte)     { e.b = append(e.b, v) }
func (e *enc) u16(v uint16)  { e.b = binary.BigEndian.AppendUint16(e.b, v) }
func (e *enc) u32(v uint32)  { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *enc) u64(v uint64)  { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *enc) raw(v []byte)  { e.b = append(e.b, v...) }
func (e *enc) str(v string)  { e.u16(uint16(len(v))); e.b = append(e.b, v...) }
func (e *enc) hash(h *hash)  { e.b = append(e.b, h[:]...) }
func (e *enc) i64(v int64)   { e.u64(uint64(v)) }
func (e *enc) reset() []byte { b := e.b; e.b = e.b[:0]; return b }

// dec reads big-endian fields from a payload. The first short read sets
// err and every later read returns zero values.
type dec struct {
	b   []byte
	err error
}

func (d *dec) need(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.err = protoErr("frame truncated")
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) u8() byte {
	if v := d.need(1); v != nil {
		return v[0]
	}
	return 0
}

func (d *dec) u16() uint16 {
	if v := d.need(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (d *dec) u32() uint32 {
	if v := d.need(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (d *dec) u64() uint64 {
	if v := d.need(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (d *dec) i64() int64 { return int64(d.u64()) }

// str reads a length-prefixed string of at most max bytes.
func (d *dec) str(max int) string {
	n := int(d.u16())
	if d.err == nil && n > max {
		d.err = protoErr("string of %d bytes, more than %d", n, max)
		return ""
	}
	return string(d.need(n))
}

func (d *dec) hash() (h hash) {
	copy(h[:], d.need(hashLen))
	return h
}

// end fails if bytes are left over.
func (d *dec) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = protoErr("%d unexpected bytes at the end of a frame", len(d.b))
	}
	return d.err
}

func encodeHello(e *enc, h *hello) {
	e.raw(helloMagic[:])
	e.u8(ProtocolVersion)
	e.u8(h.op)
	switch h.op {
	case opList:
		e.str(h.dest)
	case opPush, opPull:
		e.u8(h.flags)
		e.u8(byte(h.overwrite))
		e.u8(byte(h.links))
		e.u32(h.chunkSize)
		e.u16(h.streams)
		if h.op == opPush {
			e.str(h.dest)
		} else {
			e.u16(uint16(len(h.paths)))
			for _, p := range h.paths {
				e.str(p)
			}
		}
	case opData:
		e.raw(h.id[:])
	}
}

// decodeHello parses a Hello. It checks framing only; the server checks
// the values against its policy.
func decodeHello(p []byte, lim *Limits) (*hello, error) {
	d := dec{b: p}
	if m := d.need(4); d.err == nil && [4]byte(m) != helloMagic {
		return nil, protoErr("not a burrow transfer stream")
	}
	if v := d.u8(); d.err == nil && v != ProtocolVersion {
		return nil, fmt.Errorf("%w: the peer speaks transfer protocol version %d, this end speaks %d; use matching burrow versions",
			ErrProtocol, v, ProtocolVersion)
	}
	h := &hello{op: d.u8()}
	switch h.op {
	case opList:
		h.dest = d.str(lim.MaxPathLen)
	case opPush, opPull:
		h.flags = d.u8()
		h.overwrite = Overwrite(d.u8())
		h.links = LinkPolicy(d.u8())
		h.chunkSize = d.u32()
		h.streams = d.u16()
		if h.op == opPush {
			h.dest = d.str(lim.MaxPathLen)
		} else {
			n := int(d.u16())
			if n > maxPullPaths {
				return nil, fmt.Errorf("%w: %d paths in one fetch, more than %d", ErrLimit, n, maxPullPaths)
			}
			for i := 0; i < n && d.err == nil; i++ {
				h.paths = append(h.paths, d.str(lim.MaxPathLen))
			}
		}
		if d.err == nil {
			if h.overwrite > OverwriteRename {
				return nil, protoErr("unknown overwrite policy %d", h.overwrite)
			}
			if h.links > LinksKeep {
				return nil, protoErr("unknown links policy %d", h.links)
			}
		}
	case opData:
		copy(h.id[:], d.need(len(h.id)))
	default:
		if d.err == nil {
			return nil, protoErr("unknown transfer operation %d; this end speaks transfer protocol version %d", h.op, ProtocolVersion)
		}
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return h, nil
}

const maxPullPaths = 4096

// Entry encoding: path | type | mode | size | mtime (unix ns) | target.
func encodeEntry(e *enc, x *Entry) {
	e.str(x.Path)
	e.u8(byte(x.Type))
	e.u32(unixMode(x.Mode))
	e.i64(x.Size)
	e.i64(unixNano(x.ModTime))
	e.str(x.Target)
}

// decodeEntries appends the entries of one Entries frame to dst, checking
// each one (checkEntry) unless listing is set: a listing may show any
// file type and the names the server's filesystem holds.
func decodeEntries(dst []Entry, p []byte, lim *Limits, listing bool) ([]Entry, error) {
	d := dec{b: p}
	for len(d.b) > 0 && d.err == nil {
		x := Entry{Path: d.str(lim.MaxPathLen), Type: FileType(d.u8())}
		m := d.u32()
		x.Size = d.i64()
		x.ModTime = time.Unix(0, d.i64())
		x.Target = d.str(lim.MaxPathLen)
		if d.err != nil {
			break
		}
		if m&^0o7777 != 0 {
			return dst, protoErr("entry %q has mode bits %#o beyond 07777", x.Path, m)
		}
		x.Mode = fileMode(m)
		if listing {
			if !utf8.ValidString(x.Path) || !utf8.ValidString(x.Target) {
				return dst, protoErr("listing entry is not valid UTF-8")
			}
		} else if err := checkEntry(&x); err != nil {
			return dst, err
		}
		if len(dst) >= lim.MaxEntries {
			return dst, fmt.Errorf("%w: more than %d entries; transfer fewer files at once or raise the entries limit", ErrLimit, lim.MaxEntries)
		}
		dst = append(dst, x)
	}
	return dst, d.err
}

// manifestEnd closes a manifest.
type manifestEnd struct {
	count   uint64
	id      transferID // pull only
	streams uint16     // pull only
}

func encodeManifestEnd(e *enc, m *manifestEnd) {
	e.u64(m.count)
	e.raw(m.id[:])
	e.u16(m.streams)
}

func decodeManifestEnd(p []byte) (m manifestEnd, err error) {
	d := dec{b: p}
	m.count = d.u64()
	copy(m.id[:], d.need(len(m.id)))
	m.streams = d.u16()
	return m, d.end()
}

// Plan actions: what the receiver needs for one file. Files without a
// record need every chunk.
const (
	planSkip   byte = 1 // nothing: identical, or the destination is newer
	planResume byte = 2 // these chunks are already there, with these hashes
	planCheck  byte = 3 // the destination looks identical: compare whole-file hashes
)

// Skip reasons.
const (
	skipIdentical byte = 1
	skipNewer     byte = 2
)

type have struct {
	chunk uint32
	hash  hash
}

type planRec struct {
	file   uint32
	action byte
	reason byte   // skip
	root   hash   // check
	have   []have // resume
}

func encodePlanRec(e *enc, r *planRec) {
	e.u32(r.file)
	e.u8(r.action)
	switch r.action {
	case planSkip:
		e.u8(r.reason)
	case planCheck:
		e.hash(&r.root)
	case planResume:
		e.u32(uint32(len(r.have)))
		for i := range r.have {
			e.u32(r.have[i].chunk)
			e.hash(&r.have[i].hash)
		}
	}
}

// decodePlan appends the records of one Plan frame. Record validity
// against the manifest is checked by the sender.
func decodePlan(dst []planRec, p []byte) ([]planRec, error) {
	d := dec{b: p}
	for len(d.b) > 0 && d.err == nil {
		r := planRec{file: d.u32(), action: d.u8()}
		switch r.action {
		case planSkip:
			r.reason = d.u8()
		case planCheck:
			r.root = d.hash()
		case planResume:
			n := d.u32()
			if d.err == nil && uint64(n)*(4+hashLen) > uint64(len(d.b)) {
				return dst, protoErr("plan record claims %d chunks in a %d-byte frame", n, len(p))
			}
			r.have = make([]have, n)
			for i := range r.have {
				r.have[i] = have{chunk: d.u32(), hash: d.hash()}
			}
		default:
			if d.err == nil {
				return dst, protoErr("unknown plan action %d", r.action)
			}
		}
		if d.err == nil {
			dst = append(dst, r)
		}
	}
	return dst, d.err
}

type planEnd struct {
	id      transferID
	streams uint16
}

func encodePlanEnd(e *enc, p *planEnd) {
	e.raw(p.id[:])
	e.u16(p.streams)
}

func decodePlanEnd(p []byte) (pe planEnd, err error) {
	d := dec{b: p}
	copy(pe.id[:], d.need(len(pe.id)))
	pe.streams = d.u16()
	return pe, d.end()
}

// chunkHeader precedes a chunk's data in a Chunk frame.
type chunkHeader struct {
	file  uint32
	index uint32
	flags byte
	size  uint32 // uncompressed length
	hash  hash   // SHA-256 of the uncompressed data
}

func encodeChunkHeader(b []byte, c *chunkHeader) []byte {
	e := enc{b: b}
	e.u32(c.file)
	e.u32(c.index)
	e.u8(c.flags)
	e.u32(c.size)
	e.hash(&c.hash)
	return e.b
}

// decodeChunk splits a Chunk frame into its header and data, checking
// what can be checked without the manifest.
func decodeChunk(p []byte, maxChunk int) (c chunkHeader, data []byte, err error) {
	d := dec{b: p}
	c.file = d.u32()
	c.index = d.u32()
	c.flags = d.u8()
	c.size = d.u32()
	c.hash = d.hash()
	if d.err != nil {
		return c, nil, d.err
	}
	data = d.b
	switch {
	case c.flags&^chunkZstd != 0:
		return c, nil, protoErr("unknown chunk flags %#x", c.flags)
	case c.size == 0 || int64(c.size) > int64(maxChunk):
		return c, nil, fmt.Errorf("%w: chunk of %d bytes; chunks are 1..%d bytes", ErrLimit, c.size, maxChunk)
	case c.flags&chunkZstd != 0 && len(data) >= int(c.size):
		return c, nil, protoErr("compressed chunk is not smaller than its data")
	}
	return c, data, nil
}

type fileEnd struct {
	file uint32
	size uint64
	root hash
}

func encodeFileEnd(e *enc, f *fileEnd) {
	e.u32(f.file)
	e.u64(f.size)
	e.hash(&f.root)
}

func decodeFileEnd(p []byte) (f fileEnd, err error) {
	d := dec{b: p}
	f.file = d.u32()
	f.size = d.u64()
	f.root = d.hash()
	return f, d.end()
}

// span asks for chunks first..first+count-1 of a file. A file's FileEnd
// follows once every one of its chunks has been asked for.
type span struct {
	file, first, count uint32
}

func encodeWant(e *enc, spans []span) {
	for _, s := range spans {
		e.u32(s.file)
		e.u32(s.first)
		e.u32(s.count)
	}
}

func decodeWant(dst []span, p []byte) ([]span, error) {
	if len(p)%12 != 0 || len(p)/12 > maxWantSpans || len(p) == 0 {
		return dst, protoErr("malformed want of %d bytes", len(p))
	}
	d := dec{b: p}
	for len(d.b) > 0 {
		dst = append(dst, span{file: d.u32(), first: d.u32(), count: d.u32()})
	}
	return dst, d.err
}

// Committed statuses.
const (
	committedWritten byte = 0
	committedSkipped byte = 1
)

func encodeCommitted(e *enc, file uint32, status byte) {
	e.u32(file)
	e.u8(status)
}

func decodeCommitted(p []byte) (file uint32, status byte, err error) {
	d := dec{b: p}
	file = d.u32()
	status = d.u8()
	return file, status, d.end()
}

const maxErrorMessage = 4096

func encodeError(e *enc, err error) {
	msg := err.Error()
	var re *RemoteError
	if errors.As(err, &re) {
		msg = re.Message
	}
	if len(msg) > maxErrorMessage {
		msg = msg[:maxErrorMessage]
	}
	e.u8(byte(codeOf(err)))
	e.str(msg)
	paths := pathsOf(err)
	if len(paths) > maxErrorPaths {
		paths = paths[:maxErrorPaths]
	}
	e.u16(uint16(len(paths)))
	for _, p := range paths {
		if len(p) > 4096 {
			p = p[:4096]
		}
		e.str(p)
	}
}

func decodeError(p []byte) error {
	d := dec{b: p}
	re := &RemoteError{Code: Code(d.u8()), Message: d.str(maxErrorMessage)}
	n := int(d.u16())
	if d.err == nil && n > maxErrorPaths {
		return protoErr("error frame lists %d paths, more than %d", n, maxErrorPaths)
	}
	for i := 0; i < n && d.err == nil; i++ {
		re.Paths = append(re.Paths, d.str(4096))
	}
	if err := d.end(); err != nil {
		return err
	}
	if !utf8.ValidString(re.Message) {
		re.Message = fmt.Sprintf("%q", re.Message)
	}
	if re.Code == 0 {
		re.Code = CodeFailed
	}
	return re
}

// maxChunkFrame bounds a Chunk frame for a transfer of chunk size cs.
func maxChunkFrame(cs int) int { return chunkHeaderLen + cs }

// frameLimit is the largest payload accepted for a frame type.
func frameLimit(typ byte, chunkSize int) int {
	switch typ {
	case frameChunk:
		return maxChunkFrame(chunkSize)
	case frameHello, frameEntries, frameManifestEnd, framePlan, framePlanEnd, frameFileEnd,
		frameWant, frameWantDone, frameCommitted, frameEnd, frameDone, frameError, frameKeepalive:
		return maxControlFrame
	}
	return -1
}

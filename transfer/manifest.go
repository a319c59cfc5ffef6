package transfer

import (
	"fmt"
	"io/fs"
	"math"
	"path"
	"strings"
	"time"
	"unicode/utf8"
)

// FileType is the kind of an Entry. Values are part of the wire format.
type FileType uint8

const (
	TypeFile    FileType = 1
	TypeDir     FileType = 2
	TypeSymlink FileType = 3
	// TypeOther (devices, FIFOs, sockets) appears in listings only: a
	// manifest holding one is refused.
	TypeOther FileType = 4
)

func (t FileType) String() string {
	switch t {
	case TypeFile:
		return "file"
	case TypeDir:
		return "dir"
	case TypeSymlink:
		return "symlink"
	case TypeOther:
		return "other"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Entry describes one file, directory or symbolic link: in a manifest,
// Path is relative to the transfer's destination; in a listing, to the
// listed directory.
type Entry struct {
	Path    string // slash-separated, relative, clean
	Type    FileType
	Size    int64       // bytes, for files; -1 for a stream of unknown length
	Mode    fs.FileMode // permission bits, and setuid/setgid/sticky as the source has them
	ModTime time.Time
	Target  string // the link's target, for symbolic links
}

// Overwrite says what happens to a file that already exists at the
// destination and differs from the one sent. Identical files (same size
// and modification time) are always skipped. Values are part of the wire
// format.
type Overwrite uint8

const (
	// OverwriteNever (the default) refuses the whole transfer, before any
	// data moves, listing the files in the way.
	OverwriteNever Overwrite = 0
	// OverwriteNewer replaces files older than the source and skips the
	// others.
	OverwriteNewer Overwrite = 1
	// OverwriteAlways replaces files. Small files that look identical are
	// compared by hash as well.
	OverwriteAlways Overwrite = 2
	// OverwriteRename keeps the existing file and stores the new one as
	// "name (1).ext", "name (2).ext", ...
	OverwriteRename Overwrite = 3
)

// ParseOverwrite maps "never", "newer", "always" and "rename" to a policy.
func ParseOverwrite(s string) (Overwrite, error) {
	for o := OverwriteNever; o <= OverwriteRename; o++ {
		if o.String() == s {
			return o, nil
		}
	}
	return 0, fmt.Errorf("unknown overwrite policy %q; use never, newer, always or rename", s)
}

func (o Overwrite) String() string {
	switch o {
	case OverwriteNever:
		return "never"
	case OverwriteNewer:
		return "newer"
	case OverwriteAlways:
		return "always"
	case OverwriteRename:
		return "rename"
	}
	return fmt.Sprintf("overwrite(%d)", uint8(o))
}

// LinkPolicy says what happens to symbolic links found inside the
// directories being sent. Values are part of the wire format.
type LinkPolicy uint8

const (
	// LinksSkip (the default) leaves symbolic links out.
	LinksSkip LinkPolicy = 0
	// LinksKeep recreates symbolic links whose target is relative and
	// names another entry of the same transfer; the others are skipped.
	LinksKeep LinkPolicy = 1
)

// ParseLinks maps "skip" and "keep" to a policy.
func ParseLinks(s string) (LinkPolicy, error) {
	switch s {
	case "skip":
		return LinksSkip, nil
	case "keep":
		return LinksKeep, nil
	}
	return 0, fmt.Errorf("unknown links policy %q; use skip or keep", s)
}

func (l LinkPolicy) String() string {
	switch l {
	case LinksSkip:
		return "skip"
	case LinksKeep:
		return "keep"
	}
	return fmt.Sprintf("links(%d)", uint8(l))
}

// Limits bound what a peer can make this end allocate or hold. The zero
// value of each field means its default.
type Limits struct {
	// MaxEntries bounds the entries of one manifest or listing.
	// Default 100,000.
	MaxEntries int
	// MaxPathLen bounds a path or link target, in bytes. Default 4096.
	// A path component is at most 255 bytes whatever this says.
	MaxPathLen int
	// MaxChunkSize bounds the chunk size a peer may choose. Default
	// 16 MiB; the floor is MinChunkSize.
	MaxChunkSize int
	// MaxStreams bounds the data streams of one transfer. Default 16.
	MaxStreams int
	// MaxOpenFiles bounds the files one transfer writes at the same
	// time. Default 256.
	MaxOpenFiles int
	// IdleTimeout is how long a stream may stay silent before it is
	// dropped. Default 2 minutes.
	IdleTimeout time.Duration
	// StallTimeout is how long a transfer may move no file data while
	// its peer keeps it open (its keepalives answer IdleTimeout) before
	// the server ends it, so that a transfer slot, its destination paths
	// and its share of quota and free space are not held forever.
	// Default 10 minutes.
	StallTimeout time.Duration
}

// Chunk sizes.
const (
	DefaultChunkSize = 4 << 20
	MinChunkSize     = 64 << 10
	// maxChunksPerFile bounds the chunks of one file, and so what the
	// receiver holds per file; a sender raises its chunk size for
	// larger files.
	maxChunksPerFile = 1 << 20
)

func (l Limits) withDefaults() Limits {
	if l.MaxEntries <= 0 {
		l.MaxEntries = 100_000
	}
	if l.MaxPathLen <= 0 {
		l.MaxPathLen = 4096
	}
	l.MaxPathLen = min(l.MaxPathLen, math.MaxUint16)
	if l.MaxChunkSize <= 0 {
		l.MaxChunkSize = 16 << 20
	}
	l.MaxChunkSize = max(l.MaxChunkSize, MinChunkSize)
	if l.MaxStreams <= 0 {
		l.MaxStreams = 16
	}
	if l.MaxOpenFiles <= 0 {
		l.MaxOpenFiles = 256
	}
	if l.StallTimeout <= 0 {
		l.StallTimeout = 10 * time.Minute
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = 2 * time.Minute
	}
	return l
}

func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

func fileMode(u uint32) fs.FileMode {
	m := fs.FileMode(u & 0o777)
	if u&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if u&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if u&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

func unixNano(t time.Time) int64 {
	if t.Before(time.Unix(0, math.MinInt64)) || t.After(time.Unix(0, math.MaxInt64)) {
		return 0
	}
	return t.UnixNano()
}

// checkName reports why p is not an acceptable relative path, or "".
// Accepted paths are clean, slash-separated, relative, valid UTF-8, with
// no control characters, backslashes, empty, "." or ".." components, and
// components of at most 255 bytes.
func checkName(p string) string {
	switch {
	case p == "":
		return "empty path"
	case !utf8.ValidString(p):
		return "not valid UTF-8"
	case strings.HasPrefix(p, "/"):
		return "absolute path"
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return "control character in name"
		}
		if r == '\\' {
			return "backslash in name"
		}
	}
	for c := range strings.SplitSeq(p, "/") {
		switch {
		case c == "":
			return "empty path component"
		case c == "." || c == "..":
			return fmt.Sprintf("%q component", c)
		case len(c) > maxNameLen:
			return fmt.Sprintf("component longer than %d bytes", maxNameLen)
		}
	}
	return ""
}

// checkEntry checks one manifest entry on its own.
func checkEntry(x *Entry) error {
	if why := checkName(x.Path); why != "" {
		return &UnsafePathError{Path: x.Path, Reason: why}
	}
	switch x.Type {
	case TypeFile:
		if x.Size < -1 {
			return protoErr("file %q has size %d", x.Path, x.Size)
		}
		if x.Target != "" {
			return protoErr("file %q has a link target", x.Path)
		}
	case TypeDir:
		if x.Size != 0 || x.Target != "" {
			return protoErr("directory %q has a size or a link target", x.Path)
		}
	case TypeSymlink:
		if x.Size != 0 {
			return protoErr("symbolic link %q has a size", x.Path)
		}
		if x.Target == "" {
			return protoErr("symbolic link %q has no target", x.Path)
		}
		if !utf8.ValidString(x.Target) || strings.ContainsFunc(x.Target, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return &UnsafePathError{Path: x.Path, Reason: "link target holds control characters"}
		}
	case TypeOther:
		return &UnsafePathError{Path: x.Path, Reason: "device files, FIFOs and sockets are never accepted"}
	default:
		return protoErr("entry %q has unknown type %d", x.Path, x.Type)
	}
	return nil
}

// checkTree checks a manifest as a whole: no duplicates, every entry's
// parent an earlier directory entry (so no entry can sit under a link or
// a file), and, when links are kept, every link target inside the tree.
// Links refused under LinksKeep make the manifest invalid, as only a
// dishonest sender sends them.
func checkTree(entries []Entry, links LinkPolicy) error {
	index := make(map[string]int, len(entries))
	for i := range entries {
		x := &entries[i]
		if _, dup := index[x.Path]; dup {
			return &UnsafePathError{Path: x.Path, Reason: "listed twice in the manifest"}
		}
		if dir := path.Dir(x.Path); dir != "." {
			j, ok := index[dir]
			if !ok {
				return &UnsafePathError{Path: x.Path, Reason: "its parent directory is not in the manifest before it"}
			}
			if entries[j].Type != TypeDir {
				return &UnsafePathError{Path: x.Path, Reason: fmt.Sprintf("its parent %q is a %s, not a directory", dir, entries[j].Type)}
			}
		}
		index[x.Path] = i
	}
	if links == LinksKeep {
		for i := range entries {
			if x := &entries[i]; x.Type == TypeSymlink {
				if why := linkOutside(x.Path, x.Target, entries, index); why != "" {
					return &UnsafePathError{Path: x.Path, Reason: why}
				}
			}
		}
	}
	return nil
}

// linkOutside reports why the link at p with target t could lead outside
// the tree, or "". A kept link's target must be relative and clean, and
// name an entry of the tree through directories of the tree only, so
// that resolving it never passes through another link.
func linkOutside(p, t string, entries []Entry, index map[string]int) string {
	if strings.HasPrefix(t, "/") || strings.Contains(t, "\\") {
		return "absolute link target"
	}
	if path.Clean(t) != t {
		return "link target is not a clean path"
	}
	r := path.Join(path.Dir(p), t)
	if r == ".." || strings.HasPrefix(r, "../") {
		return "link target points outside the transferred tree"
	}
	if r == "." {
		return ""
	}
	for d := path.Dir(r); d != "."; d = path.Dir(d) {
		if j, ok := index[d]; !ok || entries[j].Type != TypeDir {
			return "link target passes through something that is not a directory of the transfer"
		}
	}
	if _, ok := index[r]; !ok {
		return "link target is not part of the transfer"
	}
	return ""
}

// chunkCount is the number of chunks of a file of size n. It is written
// not to overflow: a size near 2^63 must count as very many chunks, not
// as a negative number that passes every limit.
func chunkCount(n int64, cs int) int64 {
	c := n / int64(cs)
	if n%int64(cs) > 0 {
		c++
	}
	return c
}

// chunkLen is the length of chunk i of a file of size n.
func chunkLen(n int64, cs int, i int64) int {
	return int(min(int64(cs), n-i*int64(cs)))
}

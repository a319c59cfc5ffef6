package transfer

import (
	"encoding/binary"
	"hash/crc32"
	"io"
	"os"
	"path"
	"regexp"
	"unicode/utf8"
)

// A journal lists the chunks of a partial file that were verified and
// written. It is advisory: on resume every chunk it lists is read back
// from the partial file and hashed again, so a torn or stale journal, or
// data that never reached the disk, only costs a resend.
//
// Layout: magic "BRWJ" | version (1) | chunk size (4) | size (8) |
// mtime (8), then records: chunk (4) | hash (32) | CRC-32C of both (4).
const (
	journalHeaderLen = 4 + 1 + 4 + 8 + 8
	journalRecordLen = 4 + hashLen + 4
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func journalHeader(e *Entry, cs int) []byte {
	var b enc
	b.raw([]byte("BRWJ"))
	b.u8(1)
	b.u32(uint32(cs))
	b.i64(e.Size)
	b.i64(unixNano(e.ModTime))
	return b.b
}

func journalRecord(b []byte, chunk uint32, h *hash) []byte {
	start := len(b)
	b = binary.BigEndian.AppendUint32(b, chunk)
	b = append(b, h[:]...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b[start:], crcTable))
}

// readJournal returns the chunks a journal lists for entry e, or nil when
// the journal is missing, unreadable or for another source.
func readJournal(r *os.Root, name string, e *Entry, cs int, nchunks int64) map[uint32]hash {
	f, err := r.Open(name)
	if err != nil {
		return nil
	}
	defer f.Close()
	// Each chunk at most twice (a resend appends a second record).
	limit := int64(journalHeaderLen) + 2*nchunks*journalRecordLen
	b, err := io.ReadAll(io.LimitReader(f, limit))
	if err != nil {
		return nil
	}
	return parseJournal(b, e, cs, nchunks)
}

// parseJournal decodes a journal's bytes; see readJournal.
func parseJournal(b []byte, e *Entry, cs int, nchunks int64) map[uint32]hash {
	if len(b) < journalHeaderLen || string(b[:journalHeaderLen]) != string(journalHeader(e, cs)) {
		return nil
	}
	got := make(map[uint32]hash)
	for b = b[journalHeaderLen:]; len(b) >= journalRecordLen; b = b[journalRecordLen:] {
		rec := b[:journalRecordLen]
		if crc32.Checksum(rec[:4+hashLen], crcTable) != binary.BigEndian.Uint32(rec[4+hashLen:]) {
			continue // damaged record: its chunk is sent again
		}
		c := binary.BigEndian.Uint32(rec)
		if int64(c) >= nchunks {
			continue
		}
		got[c] = hash(rec[4 : 4+hashLen])
	}
	return got
}

// internalName matches the partial files and journals partNames makes.
var internalName = regexp.MustCompile(`^\..+\.[0-9a-f]{16}\.(part|journal)$`)

// IsInternal reports whether name, the last element of a path, is a
// partial file or journal of a transfer in progress or interrupted,
// rather than a file of the user's.
func IsInternal(name string) bool { return internalName.MatchString(name) }

// partNames returns the partial file and journal names for a destination
// file, in the same directory: ".<name>.<id>.part" and
// ".<name>.<id>.journal", the name shortened to fit 255 bytes.
func partNames(final, id string) (part, journal string) {
	dir, base := path.Split(final)
	const extra = len("..") + 16 + len(".journal")
	if len(base) > maxNameLen-extra {
		base = base[:maxNameLen-extra]
		for len(base) > 0 && !utf8.ValidString(base) {
			base = base[:len(base)-1]
		}
	}
	stem := dir + "." + base + "." + id
	return stem + ".part", stem + ".journal"
}

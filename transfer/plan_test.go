package transfer

import (
	"errors"
	"testing"
	"time"
)

// checkManifest refuses, before looking at any destination file, what the
// manifest alone shows cannot be received.
func TestCheckManifest(t *testing.T) {
	dir := t.TempDir()
	makeTree(t, dir, []node{{path: "file"}})
	root := mustOpenRoot(t, dir)
	cs := MinChunkSize
	tests := []struct {
		name    string
		entries []Entry
		dest    string
		stream  bool
		want    error // nil: accepted
	}{
		{name: "tree", entries: []Entry{dirEntry("d"), fileEntry("d/f", 10)}},
		{name: "missing destination", entries: []Entry{fileEntry("f", 10)}, dest: "new"},
		{name: "too many chunks", entries: []Entry{fileEntry("f", int64(cs)*(maxChunksPerFile+1))}, want: ErrLimit},
		{name: "unknown size outside a stream", entries: []Entry{fileEntry("f", -1)}, want: ErrLimit},
		{name: "stream", entries: []Entry{fileEntry("f", -1)}, stream: true},
		{name: "stream of known size", entries: []Entry{fileEntry("f", 10)}, stream: true, want: ErrProtocol},
		{name: "stream of two files", entries: []Entry{fileEntry("f", -1), fileEntry("g", -1)}, stream: true, want: ErrProtocol},
		{name: "destination is a file", entries: []Entry{fileEntry("f", 10)}, dest: "file", want: ErrConflict},
		{name: "file under a file", entries: []Entry{fileEntry("f", 10), fileEntry("f/g", 10)}, want: ErrUnsafePath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newReceiver(recvConfig{root: root, dest: tt.dest, chunkSize: cs, stream: tt.stream})
			r.entries = tt.entries
			err := r.checkManifest()
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("checkManifest: %v, want %v", err, tt.want)
			}
		})
	}
}

// existing applies the overwrite policy to a file already at the
// destination: skip it, compare it by hash, refuse it, or replace it.
func TestPlanExisting(t *testing.T) {
	dir := t.TempDir()
	data := []byte("0123456789")
	makeTree(t, dir, []node{{path: "f", data: data, modTime: baseTime}, {path: "d", dir: true}})
	root := mustOpenRoot(t, dir)
	cs := MinChunkSize
	same := fileEntry("f", int64(len(data)))
	bigger := fileEntry("f", 20)
	older := bigger
	older.ModTime = baseTime.Add(-time.Hour)
	newer := bigger
	newer.ModTime = baseTime.Add(time.Hour)
	fileHash := rootHash(int64(len(data)), cs, []hash{chunkHash(data)})
	tests := []struct {
		name      string
		e         Entry
		policy    Overwrite
		send      bool
		action    byte // of the one plan record, or 0 for none
		reason    byte
		conflict  bool
		stale     bool
		replaced  int64
		newEntry  bool
		checkHash bool
	}{
		{name: "identical, never", e: same, policy: OverwriteNever, action: planSkip, reason: skipIdentical, stale: true},
		{name: "identical, newer", e: same, policy: OverwriteNewer, action: planSkip, reason: skipIdentical, stale: true},
		{name: "identical, always: compared by hash", e: same, policy: OverwriteAlways, send: true, action: planCheck, replaced: 10, checkHash: true},
		{name: "different, never", e: bigger, policy: OverwriteNever, conflict: true},
		{name: "older, newer", e: older, policy: OverwriteNewer, action: planSkip, reason: skipNewer},
		{name: "newer, newer", e: newer, policy: OverwriteNewer, send: true, replaced: 10},
		{name: "different, always", e: bigger, policy: OverwriteAlways, send: true, replaced: 10},
		{name: "different, rename", e: bigger, policy: OverwriteRename, send: true, newEntry: true},
		{name: "a directory there", e: fileEntry("d", 10), policy: OverwriteAlways, conflict: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newReceiver(recvConfig{root: root, chunkSize: cs, overwrite: tt.policy})
			e := tt.e
			fi, err := root.Lstat(e.Path)
			if err != nil {
				t.Fatal(err)
			}
			p := &planner{r: r}
			f := &rfile{idx: 3, e: &e, final: e.Path, nchunks: chunkCount(e.Size, cs), exists: true}
			send, err := p.existing(f, fi)
			if err != nil {
				t.Fatal(err)
			}
			if send != tt.send {
				t.Errorf("send = %v, want %v", send, tt.send)
			}
			switch {
			case tt.action == 0 && len(p.recs) != 0:
				t.Errorf("plan records %+v, want none", p.recs)
			case tt.action != 0 && (len(p.recs) != 1 || p.recs[0].file != 3 || p.recs[0].action != tt.action || p.recs[0].reason != tt.reason):
				t.Errorf("plan records %+v, want one for file 3 with action %d, reason %d", p.recs, tt.action, tt.reason)
			}
			if tt.checkHash && (f.check == nil || *f.check != fileHash || p.recs[0].root != fileHash) {
				t.Errorf("the existing file's hash was not taken for the comparison")
			}
			if !tt.checkHash && f.check != nil {
				t.Errorf("a hash comparison was planned")
			}
			if got := p.nconflicts == 1; got != tt.conflict {
				t.Errorf("conflicts %v, want one: %v", p.conflicts, tt.conflict)
			}
			if got := len(p.stale) == 1; got != tt.stale {
				t.Errorf("stale partial files %d, want one: %v", len(p.stale), tt.stale)
			}
			if p.replaced != tt.replaced {
				t.Errorf("replaced %d bytes, want %d", p.replaced, tt.replaced)
			}
			if got := p.newEntries == 1; got != tt.newEntry {
				t.Errorf("new entries %d, want one: %v", p.newEntries, tt.newEntry)
			}
		})
	}
}

package transfer

import (
	"sync"
	"time"
)

// EventKind says what an Event reports.
type EventKind uint8

const (
	// EventPlan: the receiver has planned the transfer. TotalFiles and
	// TotalBytes count the files that will move (skipped ones excluded).
	EventPlan EventKind = iota + 1
	// EventFileStart: a file starts moving; Resumed bytes of it were
	// already at the destination.
	EventFileStart
	// EventProgress: Done bytes of the file are through (sent, received
	// or found already present), and Bytes overall.
	EventProgress
	// EventFileDone: the file is committed under its final name.
	EventFileDone
	// EventFileSkipped: the file does not move; Reason says why.
	EventFileSkipped
)

func (k EventKind) String() string {
	switch k {
	case EventPlan:
		return "plan"
	case EventFileStart:
		return "start"
	case EventProgress:
		return "progress"
	case EventFileDone:
		return "done"
	case EventFileSkipped:
		return "skipped"
	}
	return "event"
}

// Event reports progress to Client.Progress. Paths are relative to the
// destination directory.
type Event struct {
	Kind    EventKind
	Path    string
	Size    int64 // the file's size; -1 for a stream of unknown length
	Done    int64 // bytes of this file through so far
	Resumed int64 // bytes of this file already at the destination
	Reason  string

	Bytes, TotalBytes int64 // overall, counting resumed bytes as done
	Files, TotalFiles int   // files done (committed) and to do
}

// Stats summarize a transfer.
type Stats struct {
	Files   int // regular files committed
	Dirs    int // directories created or updated
	Links   int // symbolic links created
	Skipped int // entries not moved: identical, newer at the destination, or not sendable
	// Bytes is the size of the files committed.
	Bytes int64
	// BytesSent counts file data that crossed the connection, after
	// compression, in either direction.
	BytesSent int64
	// BytesResumed counts file data that was already at the destination
	// from an interrupted run and was verified instead of sent.
	BytesResumed int64
	Duration     time.Duration
}

// tracker turns the work of the client's side into Events and Stats.
// Its methods may be called from several goroutines; Progress calls are
// serialized.
type tracker struct {
	mu      sync.Mutex
	fn      func(Event)
	entries []Entry
	done    map[int]int64 // bytes done of files under way
	stats   Stats
	ev      Event
}

func newTracker(fn func(Event), entries []Entry) *tracker {
	return &tracker{fn: fn, entries: entries, done: make(map[int]int64)}
}

func (t *tracker) emit(kind EventKind, i int, e Event) {
	if t.fn == nil {
		return
	}
	e.Kind = kind
	if i >= 0 {
		e.Path, e.Size = t.entries[i].Path, t.entries[i].Size
	}
	e.Bytes, e.TotalBytes = t.ev.Bytes, t.ev.TotalBytes
	e.Files, e.TotalFiles = t.ev.Files, t.ev.TotalFiles
	t.fn(e)
}

func (t *tracker) plan(files int, bytes int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ev.TotalFiles, t.ev.TotalBytes = files, bytes
	t.emit(EventPlan, -1, Event{})
}

// skipped reports file i left alone; counted says it was in the plan's
// totals (found identical by hash only when its turn came).
func (t *tracker) skipped(i int, reason string, counted bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stats.Skipped++
	if counted {
		t.ev.TotalFiles--
		t.ev.TotalBytes -= t.entries[i].Size
		t.ev.Bytes -= t.done[i]
		delete(t.done, i)
	}
	t.emit(EventFileSkipped, i, Event{Reason: reason})
}

// skippedPath reports a local file left out of a manifest.
func (t *tracker) skippedPath(p, reason string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stats.Skipped++
	if t.fn != nil {
		t.fn(Event{Kind: EventFileSkipped, Path: p, Reason: reason, Size: -1})
	}
}

func (t *tracker) start(i int, resumed int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.done[i]; ok {
		return
	}
	t.done[i] = 0
	t.emit(EventFileStart, i, Event{Resumed: resumed})
}

// progress counts n bytes of file i through; wire of them crossed the
// connection, the rest were already there when resumed is set.
func (t *tracker) progress(i int, n, wire int64, resumed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.done[i] += n
	t.ev.Bytes += n
	t.stats.BytesSent += wire
	if resumed {
		t.stats.BytesResumed += n
	}
	t.emit(EventProgress, i, Event{Done: t.done[i]})
}

// fileDone reports file i committed; size < 0 (a stream) means the bytes
// counted so far.
func (t *tracker) fileDone(i int, size int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if size < 0 {
		size = t.done[i]
	}
	delete(t.done, i)
	t.stats.Files++
	t.stats.Bytes += size
	t.ev.Files++
	t.emit(EventFileDone, i, Event{Done: size})
}

func (t *tracker) count(dirs, links int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stats.Dirs += dirs
	t.stats.Links += links
}

func (t *tracker) result(start time.Time) Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.stats
	s.Duration = time.Since(start)
	return s
}

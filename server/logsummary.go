package server

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"
)

// Defaults of refusal logging.
const (
	refusalInterval   = 10 * time.Second
	refusalBurst      = 10   // refusals of each reason logged one by one per interval
	refusalMaxSources = 1024 // sources told apart per interval
)

// refusalLog keeps a flood of refused logins from flooding the log: the first refusals of each reason
// in an interval are logged one by one, and the rest only counted, by reason and by source, into one
// summary line at the interval's end:
//
//	"118230 logins refused from 3 sources in the last 10s" logged=20 credentials=10 rate_limited=118220 top_source=10.0.0.7 top_source_refused=118000
//
// An interval starts with the first refusal after a quiet one, so a server that refuses nothing writes
// nothing. Memory is bounded: the reasons are the caller's few constants, and at most maxSources sources
// are told apart. It is safe for concurrent use.
type refusalLog struct {
	log        *slog.Logger
	interval   time.Duration
	burst      int
	maxSources int

	mu          sync.Mutex // held while a summary is written, so that close waits for it
	start       time.Time  // of the interval; meaningful while total > 0
	total       int
	logged      int
	reasons     map[string]int // refusals by reason
	loggedBy    map[string]int // of those, logged one by one
	sources     map[string]int
	moreSources bool // sources beyond maxSources were refused
	timer       *time.Timer
	closed      bool
}

func newRefusalLog(log *slog.Logger) *refusalLog {
	return &refusalLog{
		log:        log,
		interval:   refusalInterval,
		burst:      refusalBurst,
		maxSources: refusalMaxSources,
		reasons:    make(map[string]int),
		loggedBy:   make(map[string]int),
		sources:    make(map[string]int),
	}
}

// note counts a login refused from source for reason, and reports whether the caller should log it on a
// line of its own.
func (r *refusalLog) note(reason, source string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return true // no summary will come; a closed server refuses logins before they get here
	}
	if r.total == 0 {
		r.start = time.Now()
		r.timer = time.AfterFunc(r.interval, r.flush)
	}
	r.total++
	r.reasons[reason]++
	if _, seen := r.sources[source]; seen || len(r.sources) < r.maxSources {
		r.sources[source]++
	} else {
		r.moreSources = true
	}
	if r.loggedBy[reason] < r.burst {
		r.loggedBy[reason]++
		r.logged++
		return true
	}
	return false
}

// flush ends the interval, and writes its summary if some of its refusals were not logged.
func (r *refusalLog) flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.total > r.logged {
		r.log.Warn(r.summary(time.Since(r.start)), r.attrs()...)
	}
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	r.total, r.logged, r.moreSources = 0, 0, false
	clear(r.reasons)
	clear(r.loggedBy)
	clear(r.sources)
}

// summary is the summary line's message. r.mu is held.
func (r *refusalLog) summary(elapsed time.Duration) string {
	sources := fmt.Sprintf("%d sources", len(r.sources))
	switch {
	case r.moreSources:
		sources = fmt.Sprintf("more than %d sources", len(r.sources))
	case len(r.sources) == 1:
		sources = "1 source"
	}
	return fmt.Sprintf("%d logins refused from %s in the last %v", r.total, sources, elapsed.Round(time.Second))
}

// attrs are the summary line's fields: how many were logged one by one, the count of each reason, and
// the source refused most. r.mu is held.
func (r *refusalLog) attrs() []any {
	attrs := []any{"logged", r.logged}
	for _, reason := range slices.Sorted(maps.Keys(r.reasons)) {
		attrs = append(attrs, reason, r.reasons[reason])
	}
	var top string
	for _, src := range slices.Sorted(maps.Keys(r.sources)) { // sorted: ties go to the same one every time
		if top == "" || r.sources[src] > r.sources[top] {
			top = src
		}
	}
	return append(attrs, "top_source", top, "top_source_refused", r.sources[top])
}

// close writes the summary of the interval in progress, if it needs one, and stops summarising. It is
// safe to call more than once.
func (r *refusalLog) close() {
	r.flush()
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
}

package server

import (
	"bytes"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// summaryBuffer is a log sink safe for the summary timer's goroutine.
type summaryBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *summaryBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *summaryBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() == 0 {
		return nil
	}
	return strings.Split(strings.TrimSpace(b.buf.String()), "\n")
}

func newTestRefusalLog(interval time.Duration, burst, maxSources int) (*refusalLog, *summaryBuffer) {
	buf := &summaryBuffer{}
	r := newRefusalLog(slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})))
	r.interval, r.burst, r.maxSources = interval, burst, maxSources
	return r, buf
}

func TestRefusalLogSummarises(t *testing.T) {
	t.Parallel()
	type refusal struct {
		reason, source string
		n              int
	}
	tests := []struct {
		name        string
		refusals    []refusal
		wantLogged  int
		wantSummary string // "" for none
	}{
		{"few refusals are all logged", []refusal{{"credentials", "10.0.0.1", 3}}, 3, ""},
		{"exactly the burst of each reason", []refusal{{"credentials", "10.0.0.1", 5}, {"rate_limited", "10.0.0.1", 5}}, 10, ""},
		{"one address floods", []refusal{{"credentials", "10.0.0.1", 10}, {"rate_limited", "10.0.0.1", 5990}},
			10, `level=WARN msg="6000 logins refused from 1 source in the last 0s" logged=10 credentials=10 rate_limited=5990 top_source=10.0.0.1 top_source_refused=6000`},
		{"many addresses", []refusal{{"credentials", "10.0.0.1", 2}, {"missing", "10.0.0.2", 7}, {"busy", "10.0.0.3", 3}},
			10, `level=WARN msg="12 logins refused from 3 sources in the last 0s" logged=10 busy=3 credentials=2 missing=7 top_source=10.0.0.2 top_source_refused=7`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, buf := newTestRefusalLog(time.Hour, 5, 100)
			logged := 0
			for _, rf := range tt.refusals {
				for range rf.n {
					if r.note(rf.reason, rf.source) {
						logged++
					}
				}
			}
			if logged != tt.wantLogged {
				t.Errorf("%d refusals to log one by one, want %d", logged, tt.wantLogged)
			}
			r.flush()
			got := strings.Join(buf.lines(), "\n")
			if got != tt.wantSummary {
				t.Errorf("summary:\n%s\nwant:\n%s", got, tt.wantSummary)
			}
			r.close()
		})
	}
}

// TestRefusalLogIntervals lets the timer end intervals: each flood gets
// one summary, and the interval after a summary logs its first refusals
// again.
func TestRefusalLogIntervals(t *testing.T) {
	t.Parallel()
	r, buf := newTestRefusalLog(50*time.Millisecond, 2, 100)
	defer r.close()
	for round := 1; round <= 2; round++ {
		logged := 0
		for range 100 {
			if r.note("rate_limited", "10.0.0.1") {
				logged++
			}
		}
		if logged != 2 {
			t.Fatalf("round %d: %d of 100 refusals to log, want 2", round, logged)
		}
		deadline := time.Now().Add(5 * time.Second)
		for len(buf.lines()) < round {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: no summary within 5s of its interval of 50ms; log:\n%s", round, strings.Join(buf.lines(), "\n"))
			}
			time.Sleep(5 * time.Millisecond)
		}
		if got := buf.lines()[round-1]; !strings.Contains(got, `msg="100 logins refused from 1 source in the last 0s" logged=2 rate_limited=100`) {
			t.Errorf("round %d: summary %s", round, got)
		}
	}
}

func TestRefusalLogBoundsSources(t *testing.T) {
	t.Parallel()
	r, buf := newTestRefusalLog(time.Hour, 1, 3)
	for i := range 1000 {
		r.note("credentials", "10.0.0."+strconv.Itoa(i%250))
	}
	if n := len(r.sources); n != 3 {
		t.Errorf("%d sources held, want 3", n)
	}
	r.close()
	if got := buf.lines()[0]; !strings.Contains(got, `msg="1000 logins refused from more than 3 sources in the last 0s"`) {
		t.Errorf("summary %s", got)
	}
	if len(r.sources) != 0 || len(r.reasons) != 0 {
		t.Errorf("counts held after the summary: %v, %v", r.sources, r.reasons)
	}
}

func TestRefusalLogClose(t *testing.T) {
	t.Parallel()
	r, buf := newTestRefusalLog(time.Hour, 1, 10)
	r.note("missing", "10.0.0.1")
	r.note("missing", "10.0.0.1")
	r.close()
	r.close()
	if got := buf.lines(); len(got) != 1 || !strings.Contains(got[0], `msg="2 logins refused from 1 source in the last 0s" logged=1 missing=2`) {
		t.Errorf("after close, log:\n%s\nwant the one summary", strings.Join(got, "\n"))
	}
	if !r.note("missing", "10.0.0.1") {
		t.Error("a refusal after close was not to be logged; no summary will come for it")
	}
}

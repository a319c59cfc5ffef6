package progress

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/burrowtun/burrow/transfer"
)

func TestSize(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 20: "5.0 MiB", 3 << 40: "3.0 TiB"} {
		if got := size(n); got != want {
			t.Errorf("size(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestShorten(t *testing.T) {
	t.Parallel()
	if got := shorten("short", 30); got != "short" {
		t.Errorf("shorten kept %q", got)
	}
	if got := shorten("a/very/long/path/to/some/file.txt", 10); got != "…/file.txt" || len([]rune(got)) != 10 {
		t.Errorf("shorten = %q", got)
	}
}

func TestLines(t *testing.T) {
	t.Parallel()
	var stderr bytes.Buffer
	d := New(Options{Verb: "sent", Stdout: io.Discard, Stderr: &stderr})
	d.Event(transfer.Event{Kind: transfer.EventPlan, TotalFiles: 3, TotalBytes: 2048})
	d.Event(transfer.Event{Kind: transfer.EventFileSkipped, Path: "a.txt", Reason: "identical"})
	if err := d.Finish(transfer.Stats{Files: 3, Bytes: 2048, BytesResumed: 1024, Skipped: 1, Duration: time.Second}, nil); err != nil {
		t.Fatal(err)
	}
	want := "3 files (2.0 KiB) to move\nskipped a.txt: identical\n" +
		"sent 3 files (2.0 KiB) in 1s, 2.0 KiB/s; 1.0 KiB already there from an earlier run; 1 skipped (identical or kept)\n"
	if got := stderr.String(); got != want {
		t.Fatalf("lines:\n%s\nwant:\n%s", got, want)
	}
}

func TestJSON(t *testing.T) {
	t.Parallel()
	for _, dataOnStdout := range []bool{false, true} {
		var stdout, stderr bytes.Buffer
		d := New(Options{Verb: "received", JSON: true, Stdout: &stdout, Stderr: &stderr, DataOnStdout: dataOnStdout})
		d.Event(transfer.Event{Kind: transfer.EventFileDone, Path: "f", Size: 5, Done: 5, Bytes: 5, TotalBytes: 5, Files: 1, TotalFiles: 1})
		d.Finish(transfer.Stats{Files: 1, Bytes: 5}, nil)
		out, other := &stdout, &stderr
		if dataOnStdout {
			out, other = &stderr, &stdout
		}
		if other.Len() != 0 {
			t.Fatalf("dataOnStdout=%v: JSON on the wrong stream: %q", dataOnStdout, other)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != 2 {
			t.Fatalf("dataOnStdout=%v: %d JSON lines: %q", dataOnStdout, len(lines), out)
		}
		var ev, sum map[string]any
		json.Unmarshal([]byte(lines[0]), &ev)
		json.Unmarshal([]byte(lines[1]), &sum)
		if ev["event"] != "done" || ev["path"] != "f" || sum["event"] != "summary" || sum["files"] != 1.0 {
			t.Fatalf("JSON lines: %v %v", ev, sum)
		}
	}
}

func TestQuiet(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	d := New(Options{Verb: "sent", Quiet: true, Stdout: &out, Stderr: &out})
	d.Event(transfer.Event{Kind: transfer.EventPlan, TotalFiles: 1})
	if err := d.Finish(transfer.Stats{Files: 1}, nil); err != nil || out.Len() != 0 {
		t.Fatalf("quiet printed %q, err %v", out.String(), err)
	}
}

// TestFinishErrors: a transfer that can resume says so once; a refusal
// does not promise a rerun will help.
func TestFinishErrors(t *testing.T) {
	t.Parallel()
	const hint = "partial files are kept: run the same command again to resume"
	tests := []struct {
		err      error
		wantHint bool
	}{
		{io.ErrUnexpectedEOF, true},
		{fmt.Errorf("inbox: %w", transfer.ErrConflict), false},
		{transfer.ErrQuota, false},
		{fmt.Errorf("stalled; run the same command again"), false},
	}
	for _, tt := range tests {
		d := New(Options{Verb: "sent", Stdout: io.Discard, Stderr: io.Discard})
		err := d.Finish(transfer.Stats{}, tt.err)
		if err == nil {
			t.Fatalf("%v: Finish swallowed the error", tt.err)
		}
		if got := strings.Contains(err.Error(), hint); got != tt.wantHint {
			t.Errorf("Finish(%v) = %q; hint %v, want %v", tt.err, err, got, tt.wantHint)
		}
		if !strings.HasPrefix(err.Error(), tt.err.Error()) {
			t.Errorf("Finish(%v) = %q lost the cause", tt.err, err)
		}
	}
}

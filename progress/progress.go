package progress

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/burrowtun/burrow/transfer"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Options says how a Display shows a transfer.
type Options struct {
	// Verb names what the transfer does in lines and the summary: "sent"
	// or "received".
	Verb string
	// Quiet shows nothing but errors.
	Quiet bool
	// JSON writes every event and the summary as JSON lines, to Stdout,
	// or to Stderr when DataOnStdout.
	JSON bool
	// Stdout and Stderr are the command's output streams. Without JSON, a
	// bar is drawn on Stderr when it is a terminal, and lines are written
	// there otherwise; the summary goes to Stderr.
	Stdout, Stderr io.Writer
	// DataOnStdout says the transferred data itself goes to Stdout.
	DataOnStdout bool
}

// Display shows a transfer's Events: a bar on a terminal, a line every
// few seconds otherwise, JSON lines with --json, nothing with --quiet.
type Display struct {
	verb    string
	quiet   bool
	json    *json.Encoder
	bar     *progressbar.ProgressBar
	lines   io.Writer // plain periodic lines, when not a terminal
	last    time.Time
	start   time.Time
	summary io.Writer
}

// New returns a Display for a transfer starting now. Pass its Event
// method as transfer.Client.Progress and the transfer's result to Finish.
func New(o Options) *Display {
	stdout, stderr := o.Stdout, o.Stderr
	p := &Display{verb: o.Verb, quiet: o.Quiet, start: time.Now(), summary: stderr}
	switch {
	case p.quiet:
	case o.JSON:
		w := stdout
		if o.DataOnStdout {
			w = stderr
		}
		p.json = json.NewEncoder(w)
		p.summary = nil
	case isTerminal(stderr):
		p.bar = progressbar.NewOptions64(-1,
			progressbar.OptionSetWriter(stderr),
			progressbar.OptionShowBytes(true),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetWidth(30),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(stderr) }),
		)
	default:
		p.lines = stderr
	}
	return p
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// Event shows ev; it is a transfer.Client.Progress function.
func (p *Display) Event(ev transfer.Event) {
	switch {
	case p.json != nil:
		rec := map[string]any{"event": ev.Kind.String(), "bytes": ev.Bytes, "total_bytes": ev.TotalBytes,
			"files": ev.Files, "total_files": ev.TotalFiles}
		if ev.Path != "" {
			rec["path"], rec["size"], rec["done"] = ev.Path, ev.Size, ev.Done
		}
		if ev.Resumed > 0 {
			rec["resumed"] = ev.Resumed
		}
		if ev.Reason != "" {
			rec["reason"] = ev.Reason
		}
		p.json.Encode(rec)
	case p.bar != nil:
		if ev.Kind == transfer.EventPlan {
			p.bar.ChangeMax64(ev.TotalBytes)
		}
		if ev.Path != "" {
			p.bar.Describe(fmt.Sprintf("%d/%d %s", ev.Files, ev.TotalFiles, shorten(ev.Path, 30)))
		}
		p.bar.Set64(ev.Bytes)
	case p.lines != nil:
		if ev.Kind == transfer.EventFileSkipped {
			fmt.Fprintf(p.lines, "skipped %s: %s\n", ev.Path, ev.Reason)
			return
		}
		if ev.Kind == transfer.EventPlan {
			p.last = time.Now()
			fmt.Fprintf(p.lines, "%d files (%s) to move\n", ev.TotalFiles, size(ev.TotalBytes))
			return
		}
		if now := time.Now(); now.Sub(p.last) >= 2*time.Second {
			p.last = now
			fmt.Fprintf(p.lines, "%s %s of %s, %d/%d files, %s/s\n", p.verb, size(ev.Bytes), size(ev.TotalBytes),
				ev.Files, ev.TotalFiles, size(int64(float64(ev.Bytes)/max(now.Sub(p.start).Seconds(), 0.001))))
		}
	}
}

// Finish prints the summary, or turns err into the one-line error a user
// can act on: a transfer that can resume says so.
func (p *Display) Finish(st transfer.Stats, err error) error {
	if p.bar != nil {
		if err == nil {
			p.bar.Finish()
		} else {
			p.bar.Exit()
			fmt.Fprintln(p.summary)
		}
	}
	if err != nil {
		if transfer.Resumable(err) && !strings.Contains(err.Error(), "run the same command again") {
			return fmt.Errorf("%w; partial files are kept: run the same command again to resume", err)
		}
		return err
	}
	if p.json != nil {
		p.json.Encode(map[string]any{"event": "summary", "files": st.Files, "dirs": st.Dirs, "links": st.Links,
			"skipped": st.Skipped, "bytes": st.Bytes, "bytes_sent": st.BytesSent, "bytes_resumed": st.BytesResumed,
			"seconds": st.Duration.Seconds()})
		return nil
	}
	if p.quiet {
		return nil
	}
	rate := float64(st.Bytes) / max(st.Duration.Seconds(), 0.001)
	fmt.Fprintf(p.summary, "%s %d files (%s) in %s, %s/s", p.verb, st.Files, size(st.Bytes), st.Duration.Round(time.Millisecond), size(int64(rate)))
	if st.BytesResumed > 0 {
		fmt.Fprintf(p.summary, "; %s already there from an earlier run", size(st.BytesResumed))
	}
	if st.Skipped > 0 {
		fmt.Fprintf(p.summary, "; %d skipped (identical or kept)", st.Skipped)
	}
	fmt.Fprintln(p.summary)
	return nil
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n+1:]
}

// size formats a byte count in binary units.
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

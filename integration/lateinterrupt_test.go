package integration

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/burrowtun/burrow/integration/harness"
)

// Must-show: a send or fetch interrupted late, in the last 10% of its
// bytes or just after its last chunk left, while the receiver may still
// be writing, verifying or committing, is whole after the same command is
// run again at once; never an "incomplete" that a rerun does not fix.
//
// The file is 40 MiB, 10 chunks of the default 4 MiB, so the window is
// the one a larger file has (its last chunk, whole-file check and commit)
// at a fraction of the time. Progress lines come once a chunk, the 9th at
// 90%: a random point in the last 10% is a random moment after that line,
// up to one and a half times the gap between the 8th and 9th lines (about
// one chunk's time on whatever machine runs it), which spreads the
// interruptions over the last chunks' writing, the FileEnd and the
// commit. The runs exactly after the last chunk interrupt as soon as the
// line of the 10th shows.
func TestTransferInterruptedLate(t *testing.T) {
	const (
		size       = 40 << 20
		randomRuns = 20
		exactRuns  = 5
	)
	fsrv := newFileServer(t)
	src := filepath.Join(t.TempDir(), "late.bin")
	writeRandomFile(t, src, size, 27)
	sum := fileSHA256(t, src)
	seed := uint64(time.Now().UnixNano())
	t.Logf("interruption points from seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 27))

	// run interrupts one transfer, reruns it at once and checks the
	// result, which lands at local. It reports whether the interrupted
	// run failed after every byte had gone through, and what it left
	// behind.
	run := func(t *testing.T, cmd string, flags []string, arg, local string, exact bool) (lateFail bool, left string) {
		t.Helper()
		p := fsrv.startTransfer(t, cmd, flags, arg)
		var seen int64
		if exact {
			seen, _ = progressWhen(t, p, size)
		} else {
			_, t80 := progressWhen(t, p, size*8/10)
			_, t90 := progressWhen(t, p, size*9/10)
			gap := max(t90.Sub(t80), time.Millisecond)
			time.Sleep(time.Duration(rng.Int64N(int64(gap) * 3 / 2)))
			seen = progressMax(p)
		}
		interrupt(t, p)
		code := p.WaitExit(t, harness.IOTimeout)
		left = leftBehind(t, local, size)
		s := fsrv.transfer(t, cmd, flags, arg)
		if got := fileSHA256(t, local); got != sum {
			t.Fatalf("interrupted at %s (%s), then rerun: %s differs from the source", mib(seen), left, local)
		}
		if s.Files+s.Skipped != 1 {
			t.Errorf("the rerun reports %d files committed and %d skipped, want the one file either way", s.Files, s.Skipped)
		}
		if ps := partials(t, filepath.Dir(local)); len(ps) != 0 {
			t.Errorf("partial files left after the rerun: %q", ps)
		}
		return code != 0 && seen >= size, left
	}

	t.Run("send", func(t *testing.T) {
		late, states := 0, map[string]int{}
		for i := range randomRuns + exactRuns {
			dir := "late" + strconv.Itoa(i)
			final := filepath.Join(fsrv.root, dir, "late.bin")
			lateFail, left := run(t, "send", []string{"--to", dir}, src, final, i >= randomRuns)
			if lateFail {
				late++
			}
			states[left]++
			os.RemoveAll(filepath.Join(fsrv.root, dir))
		}
		t.Logf("%d of %d sends failed after their last chunk had left; the server held: %v", late, randomRuns+exactRuns, states)
		if late == 0 {
			t.Error("no send was interrupted after its last chunk: the test did not reach the window it is for")
		}
	})

	t.Run("fetch", func(t *testing.T) {
		if err := os.MkdirAll(fsrv.root, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(src, filepath.Join(fsrv.root, "late.bin")); err != nil {
			t.Fatal(err)
		}
		late, states := 0, map[string]int{}
		for i := range randomRuns + exactRuns {
			dst := filepath.Join(t.TempDir(), "late"+strconv.Itoa(i))
			lateFail, left := run(t, "fetch", []string{"--to", dst}, "late.bin", filepath.Join(dst, "late.bin"), i >= randomRuns)
			if lateFail {
				late++
			}
			states[left]++
			os.RemoveAll(dst)
		}
		t.Logf("%d of %d fetches failed after their last chunk had arrived; they left: %v", late, randomRuns+exactRuns, states)
	})
}

// progressWhen waits, polling often, until a --json transfer reports at
// least n bytes through, and returns how many it reported and when it
// saw them. A transfer that ends first returns what it reported last.
func progressWhen(t *testing.T, p *harness.Proc, n int64) (int64, time.Time) {
	t.Helper()
	deadline := time.Now().Add(transferTimeout)
	for time.Now().Before(deadline) {
		if done := progressMax(p); done >= n || p.Exited() {
			return done, time.Now()
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%s did not get %s through within %v", p.Name, mib(n), transferTimeout)
	return 0, time.Time{}
}

// interrupt sends SIGINT to p by PID unless it has already exited.
func interrupt(t *testing.T, p *harness.Proc) {
	t.Helper()
	if p.Exited() {
		return
	}
	if err := syscall.Kill(p.Cmd.Process.Pid, syscall.SIGINT); err != nil && !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("SIGINT to %s: %v", p.Name, err)
	}
}

// leftBehind names what an interrupted transfer left at final, for the
// log (on the server it may still be changing). A partial file of full
// length may still lack a chunk: chunks land in any order.
func leftBehind(t *testing.T, final string, size int64) string {
	t.Helper()
	if _, err := os.Stat(final); err == nil {
		return "committed"
	}
	ps := partials(t, filepath.Dir(final))
	if len(ps) == 0 {
		return "nothing"
	}
	if fi, err := os.Stat(ps[0]); err == nil && fi.Size() >= size {
		return "full-length partial"
	}
	return "incomplete partial"
}

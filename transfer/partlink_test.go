package transfer

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestPlantedLinkAtPartialName: a link planted at the name of a file's
// partial file or journal (their names are predictable: anyone who can
// write in the destination directory and knows the file's name, size and
// time can plant one) is never written through. Once, the partial file
// was opened through it, truncated, filled and chmodded, and the journal
// truncated and overwritten: both clobbered the link's target, another
// file under the same root; a link at the partial file with a journal
// beside it even had the target "resumed", the missing chunks written
// into it.
func TestPlantedLinkAtPartialName(t *testing.T) {
	t.Parallel()
	cs := MinChunkSize
	payload := randBytes(41, cs+cs/2)
	e := fileEntry("f", int64(len(payload)))
	part, journal := partNames("inbox/f", resumeID(&e, cs))
	for _, tc := range []struct {
		name    string
		journal bool // a valid journal listing chunk 0, with the link at the partial file
	}{
		{name: "fresh"},
		{name: "resume", journal: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			base := t.TempDir()
			root := filepath.Join(base, "root")
			// The victim shares the payload's first chunk, so a journal
			// naming that chunk verifies against it.
			victim := append(append([]byte(nil), payload[:cs]...), "precious"...)
			makeTree(t, base, []node{
				{path: "root", dir: true},
				{path: "root/inbox", dir: true},
				{path: "root/victim", data: victim},
				{path: "root/victim2", data: []byte("also precious")},
			})
			if err := os.Symlink("../victim", filepath.Join(root, part)); err != nil {
				t.Fatal(err)
			}
			if tc.journal {
				h0 := chunkHash(payload[:cs])
				j := journalRecord(journalHeader(&e, cs), 0, &h0)
				if err := os.WriteFile(filepath.Join(root, journal), j, 0o600); err != nil {
					t.Fatal(err)
				}
			} else if err := os.Symlink("../victim2", filepath.Join(root, journal)); err != nil {
				t.Fatal(err)
			}
			h := newHarness(t, ServerConfig{}, Endpoint{Root: root, Write: true})
			err := rawPush(t, h, hello{dest: "inbox"}, []Entry{e}, func(c *conn) error {
				return sendFile(c, 0, payload, cs)
			})
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(filepath.Join(root, "victim")); !bytes.Equal(got, victim) {
				t.Errorf("victim changed: %d bytes, %q...", len(got), got[max(0, len(got)-16):])
			}
			if got, _ := os.ReadFile(filepath.Join(root, "victim2")); string(got) != "also precious" {
				t.Errorf("victim2 changed: %q", got)
			}
			fi, err := os.Lstat(filepath.Join(root, "inbox", "f"))
			if err != nil || !fi.Mode().IsRegular() {
				t.Fatalf("inbox/f is not a regular file: %v %v", fi, err)
			}
			if got, _ := os.ReadFile(filepath.Join(root, "inbox", "f")); !bytes.Equal(got, payload) {
				t.Errorf("inbox/f holds the wrong data")
			}
		})
	}
}

package transfer

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestRenameNoReplace checks the rename that commits a file under the
// policies that keep existing files (never, rename): a file that appeared
// at the final name after the receiver last looked (another program
// writing into the same directory) fails it with fs.ErrExist and keeps
// both files, where a plain rename would have replaced the newcomer.
func TestRenameNoReplace(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	write := func(name, data string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	want := func(name, data string) {
		t.Helper()
		if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(got) != data {
			t.Errorf("%s: %q, %v; want %q", name, got, err, data)
		}
	}
	r := &receiver{cfg: recvConfig{root: root}}

	write(".a.part", "ours")
	write("a", "theirs")
	if err := r.renameNoReplace(".a.part", "a"); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("onto an existing file: %v, want fs.ErrExist", err)
	}
	want("a", "theirs")
	want(".a.part", "ours")

	if err := r.renameNoReplace(".a.part", "b"); err != nil {
		t.Fatalf("onto a free name: %v", err)
	}
	want("b", "ours")
	if _, err := os.Lstat(filepath.Join(dir, ".a.part")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the partial file is still there after the rename: %v", err)
	}

	if err := r.renameNoReplace(".a.part", "c"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("from a missing file: %v, want fs.ErrNotExist", err)
	}
}

package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/burrowtun/burrow/transfer"
)

func TestFileRootsLookup(t *testing.T) {
	shared := t.TempDir()
	abs := t.TempDir()
	us := mustParse(t, authJSON(t, map[string]fileUser{
		"plain":   {Password: cheapHash(t, "x")},
		"own":     {Password: cheapHash(t, "x"), Files: &FileAccess{Root: "own", Access: "r", MaxBytes: 1 << 20, MaxFiles: 10}},
		"elsewhr": {Password: cheapHash(t, "x"), Files: &FileAccess{Root: abs, Access: "w"}},
	}))
	fr := FileRoots{Shared: shared, Users: func() *Users { return us }}

	ep, err := fr.Lookup("plain")
	if err != nil || ep.Root != filepath.Join(shared, "plain") || !ep.Read || !ep.Write || ep.User != "plain" {
		t.Fatalf("plain user: %+v, %v; want a directory of its own under the shared root, read and write", ep, err)
	}
	if fi, err := os.Stat(ep.Root); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("the plain user's directory: %v, %v; want it made with mode 0700", fi, err)
	}
	ep, err = fr.Lookup("own")
	if err != nil || ep.Root != filepath.Join(shared, "own") || !ep.Read || ep.Write || ep.MaxBytes != 1<<20 || ep.MaxFiles != 10 {
		t.Fatalf("user with a relative root: %+v, %v", ep, err)
	}
	if fi, err := os.Stat(ep.Root); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("the user's directory under the shared root: %v, %v; want it made with mode 0700", fi, err)
	}
	ep, err = fr.Lookup("elsewhr")
	if err != nil || ep.Root != abs || ep.Read || !ep.Write {
		t.Fatalf("user with an absolute root: %+v, %v", ep, err)
	}

	// A valid user name that is not a directory of its own, and a root
	// that climbs out, get nothing.
	dots := mustParse(t, authJSON(t, map[string]fileUser{
		"..":    {Password: cheapHash(t, "x")},
		"climb": {Password: cheapHash(t, "x"), Files: &FileAccess{Root: "../etc"}},
	}))
	for _, name := range []string{"..", "climb"} {
		_, err := FileRoots{Shared: shared, Users: func() *Users { return dots }}.Lookup(name)
		if !errors.Is(err, transfer.ErrPermission) {
			t.Errorf("user %q: %v; want refused", name, err)
		}
	}

	none := FileRoots{Users: func() *Users { return us }}
	if _, err := none.Lookup("plain"); !errors.Is(err, transfer.ErrPermission) || !strings.Contains(err.Error(), "--files-root") {
		t.Fatalf("no shared root and no entry: %v; want a permission error naming --files-root", err)
	}
	if _, err := none.Lookup("own"); !errors.Is(err, transfer.ErrPermission) || !strings.Contains(err.Error(), "relative") {
		t.Fatalf("relative root without a shared root: %v", err)
	}
	if ep, err := none.Lookup("elsewhr"); err != nil || ep.Root != abs {
		t.Fatalf("absolute root without a shared root: %+v, %v", ep, err)
	}
}

func TestFileAccessChecked(t *testing.T) {
	for _, fa := range []FileAccess{{}, {Root: "x", Access: "rwx"}, {Root: "x", MaxBytes: -1}} {
		_, err := ParseUsers(authJSON(t, map[string]fileUser{"a": {Password: cheapHash(t, "x"), Files: &fa}}))
		if err == nil || !strings.Contains(err.Error(), `"files"`) {
			t.Errorf("files entry %+v: %v; want it refused, naming the entry", fa, err)
		}
	}
}

func TestAddUserKeepsFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.json")
	os.WriteFile(path, authJSON(t, map[string]fileUser{"a": {Password: cheapHash(t, "x"), Files: &FileAccess{Root: "a", Access: "r"}}}), 0o600)
	if err := AddUser(path, "a", "new password", nil); err != nil {
		t.Fatal(err)
	}
	us, err := LoadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	if f := us.Lookup("a").files; f == nil || f.Root != "a" || f.Access != "r" {
		t.Fatalf("files entry after a password change: %+v; want it kept", f)
	}
}

// Concurrent edits of the users file each take the lock: none is lost.
func TestAddUserConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.json")
	const n = 6
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- AddUser(path, fmt.Sprintf("user%d", i), "password", nil) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	us, err := LoadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	if us.Len() != n {
		t.Fatalf("%d users after %d concurrent adds, want all of them", us.Len(), n)
	}
}

func TestWorldWritableAuthfileRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.json")
	if err := AddUser(path, "a", "password", nil); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o666)
	_, err := LoadUsers(path)
	if err == nil || !strings.Contains(err.Error(), "chmod o-w") {
		t.Fatalf("loading a world-writable users file: %v; want it refused with the fix", err)
	}
}

package transfer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// srcFS is a tree a sender walks: the local filesystem on the client, an
// os.Root on the server.
type srcFS interface {
	Lstat(name string) (fs.FileInfo, error)
	Stat(name string) (fs.FileInfo, error)
	Readlink(name string) (string, error)
	Open(name string) (*os.File, error)
	Join(dir, name string) string
}

type localFS struct{}

func (localFS) Lstat(name string) (fs.FileInfo, error) { return os.Lstat(name) }
func (localFS) Stat(name string) (fs.FileInfo, error)  { return os.Stat(name) }
func (localFS) Readlink(name string) (string, error)   { return os.Readlink(name) }
func (localFS) Open(name string) (*os.File, error)     { return os.Open(name) }
func (localFS) Join(dir, name string) string           { return filepath.Join(dir, name) }

type rootFS struct{ *os.Root }

func (rootFS) Join(dir, name string) string { return path.Join(dir, name) }

// walker builds a manifest from source paths.
type walker struct {
	fsys    srcFS
	links   LinkPolicy
	limit   int
	entries []Entry
	names   []string // source name of each entry, for opening
	skipped func(p, reason string)
}

// add walks one top-level source: a file, or a directory and everything
// under it, named base in the manifest. A top-level link is followed.
func (w *walker) add(name, base string) error {
	fi, err := w.fsys.Stat(name)
	if err != nil {
		return srcErr(name, err)
	}
	if why := checkName(base); why != "" {
		return &UnsafePathError{Path: base, Reason: why}
	}
	return w.visit(name, base, fi)
}

func (w *walker) visit(name, rel string, fi fs.FileInfo) error {
	if len(w.entries) >= w.limit {
		return fmt.Errorf("%w: more than %d entries; send fewer files at once or raise the entries limit", ErrLimit, w.limit)
	}
	e := Entry{Path: rel, Mode: fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky), ModTime: fi.ModTime()}
	switch {
	case fi.Mode().IsRegular():
		e.Type, e.Size = TypeFile, fi.Size()
	case fi.IsDir():
		e.Type = TypeDir
	case fi.Mode()&fs.ModeSymlink != 0:
		if w.links != LinksKeep {
			w.skip(rel, "symbolic link (links policy skip)")
			return nil
		}
		t, err := w.fsys.Readlink(name)
		if err != nil {
			return srcErr(name, err)
		}
		e.Type, e.Target, e.Mode = TypeSymlink, filepath.ToSlash(t), 0o777
	default:
		w.skip(rel, "not a regular file, directory or link")
		return nil
	}
	w.entries = append(w.entries, e)
	w.names = append(w.names, name)
	if e.Type != TypeDir {
		return nil
	}
	d, err := w.fsys.Open(name)
	if err != nil {
		return srcErr(name, err)
	}
	defer d.Close()
	var kids []fs.DirEntry
	for {
		batch, err := d.ReadDir(1024)
		kids = append(kids, batch...)
		if err != nil || len(batch) == 0 {
			break
		}
		if len(w.entries)+len(kids) > w.limit {
			return fmt.Errorf("%w: more than %d entries; send fewer files at once or raise the entries limit", ErrLimit, w.limit)
		}
	}
	slices.SortFunc(kids, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	for _, k := range kids {
		kr := rel + "/" + k.Name()
		if why := checkName(kr); why != "" {
			w.skip(kr, "name cannot be sent: "+why)
			continue
		}
		kn := w.fsys.Join(name, k.Name())
		fi, err := w.fsys.Lstat(kn)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // gone since the listing
			}
			return srcErr(kn, err)
		}
		if err := w.visit(kn, kr, fi); err != nil {
			return err
		}
	}
	return nil
}

func (w *walker) skip(p, reason string) {
	if w.skipped != nil {
		w.skipped(p, reason)
	}
}

// dropOutsideLinks removes kept links whose target leaves the tree or is
// not part of it, until none is left (a link may point at a dropped one).
func (w *walker) dropOutsideLinks() {
	for {
		index := make(map[string]int, len(w.entries))
		for i := range w.entries {
			index[w.entries[i].Path] = i
		}
		n := 0
		for i := range w.entries {
			e := &w.entries[i]
			if e.Type == TypeSymlink {
				if why := linkOutside(e.Path, e.Target, w.entries, index); why != "" {
					w.skip(e.Path, why)
					continue
				}
			}
			w.entries[n], w.names[n] = *e, w.names[i]
			n++
		}
		if n == len(w.entries) {
			return
		}
		w.entries, w.names = w.entries[:n], w.names[:n]
	}
}

// dupCheck refuses two sources with the same name.
func dupCheck(entries []Entry) error {
	seen := make(map[string]bool)
	for i := range entries {
		if p := entries[i].Path; !strings.Contains(p, "/") {
			if seen[p] {
				return fmt.Errorf("two sources are named %q; they would land on the same destination", p)
			}
			seen[p] = true
		}
	}
	return nil
}

func srcErr(name string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: %s", ErrPermission, name)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) && strings.Contains(pe.Err.Error(), "escapes") {
		return &UnsafePathError{Path: name, Reason: "it resolves outside the root through a symbolic link"}
	}
	return err
}

// cleanRemote turns a user's remote path into one relative to the root:
// leading slashes are dropped (the root is "/" to the user), "" and "."
// are the root itself, and ".." or odd characters are refused.
func cleanRemote(p string) (string, error) {
	q := strings.TrimLeft(p, "/")
	q = strings.TrimRight(q, "/")
	if q == "" || q == "." {
		return "", nil
	}
	if why := checkName(q); why != "" {
		return "", &UnsafePathError{Path: p, Reason: why}
	}
	return q, nil
}

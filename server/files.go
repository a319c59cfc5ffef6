package server

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/burrowtun/burrow/transfer"
)

// FileAccess is a user's "files" entry in the authfile: where their
// transfers read and write, and how much they may store.
type FileAccess struct {
	// Root is the directory the user's paths are relative to. A relative
	// Root is taken under the server's shared files root.
	Root string `json:"root"`
	// Access is "rw" (the default), "r" (fetch and ls only) or "w" (send
	// only).
	Access string `json:"access,omitempty"`
	// MaxBytes and MaxFiles, when positive, bound the total size of the
	// files and the number of entries under Root.
	MaxBytes int64 `json:"max_bytes,omitempty"`
	MaxFiles int64 `json:"max_files,omitempty"`
}

func (fa *FileAccess) check() error {
	if fa.Root == "" {
		return errors.New(`"files" needs a "root" directory`)
	}
	switch fa.Access {
	case "", "rw", "r", "w":
	default:
		return fmt.Errorf(`"files" access %q: want "rw", "r" or "w"`, fa.Access)
	}
	if fa.MaxBytes < 0 || fa.MaxFiles < 0 {
		return errors.New(`"files" max_bytes and max_files must not be negative`)
	}
	return nil
}

// FileRoots decides where each user's file transfers go: the user's own
// "files" entry in the authfile, or else a directory of their own under
// the shared root (made mode 0700 on first use), where they may read and
// write. Users never see each other's files unless the administrator
// points their entries at the same directory. It implements
// transfer.ServerConfig.Lookup.
type FileRoots struct {
	// Shared is the server's --files-root; empty means only users with
	// their own entry may transfer files.
	Shared string
	// Users returns the users now in force (they change on reload).
	Users func() *Users
}

// Lookup returns user's transfer endpoint.
func (f FileRoots) Lookup(user string) (transfer.Endpoint, error) {
	ep := transfer.Endpoint{User: user, Read: true, Write: true}
	var fa *FileAccess
	if us := f.Users(); us != nil {
		if u := us.users[user]; u != nil {
			fa = u.files
		}
	}
	if fa == nil {
		if f.Shared == "" {
			return ep, fmt.Errorf("%w: file transfer is not enabled for user %s; the server needs --files-root DIR or a \"files\" entry for the user in its authfile",
				transfer.ErrPermission, user)
		}
		fa = &FileAccess{Root: user}
	}
	ep.Root = fa.Root
	ep.Read = fa.Access != "w"
	ep.Write = fa.Access != "r"
	ep.MaxBytes, ep.MaxFiles = fa.MaxBytes, fa.MaxFiles
	if filepath.IsAbs(ep.Root) {
		return ep, nil
	}
	if f.Shared == "" {
		return ep, fmt.Errorf("%w: user %s's files root %q is relative, but the server has no --files-root to put it under",
			transfer.ErrPermission, user, fa.Root)
	}
	// A user name such as ".." is a valid name but not a directory of
	// its own; a relative root must stay under the shared one.
	rel := filepath.Clean(ep.Root)
	if rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return ep, fmt.Errorf("%w: user %s's files directory %q would not be under --files-root; give the user a \"files\" root in the authfile",
			transfer.ErrPermission, user, fa.Root)
	}
	ep.Root = filepath.Join(f.Shared, rel)
	// Made on first use, owner-only; an absolute root is the
	// administrator's to make. The error names no server path: it goes
	// to the client.
	if err := os.MkdirAll(ep.Root, 0o700); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return ep, fmt.Errorf("cannot make the files directory of user %s on the server: %v", user, err)
	}
	return ep, nil
}

package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

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
// "files" entry in the authfile, or else the shared root, where every
// user may read and write. It implements transfer.ServerConfig.Lookup.
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
		ep.Root = f.Shared
		return ep, nil
	}
	ep.Root = fa.Root
	ep.Read = fa.Access != "w"
	ep.Write = fa.Access != "r"
	ep.MaxBytes, ep.MaxFiles = fa.MaxBytes, fa.MaxFiles
	if !filepath.IsAbs(ep.Root) {
		if f.Shared == "" {
			return ep, fmt.Errorf("%w: user %s's files root %q is relative, but the server has no --files-root to put it under",
				transfer.ErrPermission, user, fa.Root)
		}
		ep.Root = filepath.Join(f.Shared, fa.Root)
		// A user's own directory under the shared root is made on first
		// use, owner-only; an absolute root is the administrator's to make.
		if err := os.MkdirAll(ep.Root, 0o700); err != nil {
			return ep, fmt.Errorf("files root of user %s: %w", user, err)
		}
	}
	return ep, nil
}

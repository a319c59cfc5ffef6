//go:build unix

package server

import (
	"os"
	"path/filepath"
	"syscall"
)

// keepOwner gives tmp the owner and group of the existing file at path,
// when there is one and the process may (root may; others keep their
// own, which is then the file's owner already).
func keepOwner(tmp *os.File, path string) {
	fi, err := os.Stat(path)
	if err != nil {
		return
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		tmp.Chown(int(st.Uid), int(st.Gid))
	}
}

// lockFile takes an exclusive lock on the directory holding path, so
// that two edits of the users file at the same moment do not lose one
// (the file itself is replaced by a rename, so it cannot hold the lock);
// the returned function releases it.
func lockFile(path string) (func(), error) {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX); err != nil {
		d.Close()
		return nil, err
	}
	return func() { d.Close() }, nil
}

// othersMayWrite reports whether users other than the owner and group
// may change the file at path.
func othersMayWrite(fi os.FileInfo) bool { return fi.Mode().Perm()&0o002 != 0 }

//go:build linux || darwin || freebsd

package transfer

import "golang.org/x/sys/unix"

// statfs returns the bytes available to unprivileged users on the
// filesystem holding dir.
func statfs(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return -1, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// filesystemOf identifies the filesystem holding dir (its device), so
// that transfers into different filesystems do not count against each
// other's free space; 0 when unknown.
func filesystemOf(dir string) uint64 {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0
	}
	return uint64(st.Dev)
}

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

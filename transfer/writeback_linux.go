package transfer

import "golang.org/x/sys/unix"

// startWriteback asks the kernel to start writing a chunk just written to
// disk, without waiting for it. The fsync at commit then finds most of a
// large file already written, where it would otherwise begin the whole
// write-back only then, after the last byte arrived.
func startWriteback(f partFile, off, n int64) {
	if fd, ok := f.(interface{ Fd() uintptr }); ok {
		unix.SyncFileRange(int(fd.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
	}
}

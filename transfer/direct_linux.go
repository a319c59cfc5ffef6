package transfer

import (
	"os"

	"golang.org/x/sys/unix"
)

// useDirect switches f, a partial file opened for writing chunks of cs
// bytes, to direct I/O (O_DIRECT) when its filesystem supports it and cs
// keeps every chunk's offset aligned. It returns the alignment that each
// write's offset and length must keep, or 0 when f stays buffered.
//
// Written through the page cache, every byte is copied into a page the
// kernel must first allocate, and written to disk later anyway, since a
// file is fsynced before it is renamed into place. Direct I/O hands the
// verified chunk buffer to the disk as it is: no copy, no page cache
// pages, and the fsync at commit finds the data already written.
func useDirect(f *os.File, cs int) int {
	var st unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &st); err != nil {
		return 0
	}
	mem, off := int(st.Dio_mem_align), int(st.Dio_offset_align)
	if st.Mask&unix.STATX_DIOALIGN == 0 || off == 0 || mem == 0 || off > dioAlign || mem > dioAlign || cs%off != 0 {
		return 0 // not supported here, or stricter than chunk buffers are aligned
	}
	if setDirect(f, true) != nil {
		return 0
	}
	return off
}

// setDirect turns direct I/O on or off for f.
func setDirect(f *os.File, on bool) error {
	fd := int(f.Fd())
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	if on {
		fl |= unix.O_DIRECT
	} else {
		fl &^= unix.O_DIRECT
	}
	_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
	return err
}

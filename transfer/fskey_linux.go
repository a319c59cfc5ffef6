package transfer

import (
	"os"

	"golang.org/x/sys/unix"
)

// ownSpace are filesystem types whose free space belongs to their device
// alone, so that the device number tells one pool of free space from
// another. Others (btrfs subvolumes, ZFS datasets, overlays, network
// filesystems) may share one pool under several device numbers.
var ownSpace = map[int64]bool{
	unix.EXT4_SUPER_MAGIC:  true, // also ext2 and ext3
	unix.XFS_SUPER_MAGIC:   true,
	unix.TMPFS_MAGIC:       true,
	unix.F2FS_SUPER_MAGIC:  true,
	unix.MSDOS_SUPER_MAGIC: true,
	unix.EXFAT_SUPER_MAGIC: true,
}

// filesystemOf names the pool of free space root's directory draws on,
// for spaceBook: its device, for a filesystem of ownSpace; 0, which all
// others share, otherwise: transfers to those count against each other,
// refused early rather than accepted past the reserve.
func filesystemOf(root *os.Root) uint64 {
	f, err := root.Open(".")
	if err != nil {
		return 0
	}
	defer f.Close()
	fd := int(f.Fd())
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil || !ownSpace[int64(fs.Type)] {
		return 0
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0
	}
	return uint64(st.Dev)
}

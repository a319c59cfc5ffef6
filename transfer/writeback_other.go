//go:build !linux

package transfer

// startWriteback: write-back starts at the fsync where the system has no
// sync_file_range.
func startWriteback(partFile, int64, int64) {}

package transfer

import "errors"

// Resumable reports whether running the same transfer again can get
// further than err let it: not for a refusal that stays true until
// someone changes something (a conflict, a permission, an unsafe path, a
// missing file, a limit, a quota, a peer that speaks another protocol).
// An interrupted transfer keeps its partial files, so a rerun moves only
// what is missing.
func Resumable(err error) bool {
	for _, e := range []error{ErrConflict, ErrPermission, ErrUnsafePath,
		ErrNotFound, ErrLimit, ErrQuota, ErrProtocol} {
		if errors.Is(err, e) {
			return false
		}
	}
	return true
}

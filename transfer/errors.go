package transfer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"
)

// Sentinel errors. Errors returned by this package, including those the
// peer reports over the protocol (*RemoteError), match one of these with
// errors.Is when callers need to tell them apart.
var (
	// ErrConflict: files exist at the destination and the overwrite
	// policy forbids replacing them. *ConflictError lists them.
	ErrConflict = errors.New("destination files exist")
	// ErrNoSpace: the receiving disk is full or would be too full.
	ErrNoSpace = errors.New("not enough free space")
	// ErrQuota: the transfer would exceed the user's size or file quota.
	ErrQuota = errors.New("quota exceeded")
	// ErrPermission: the user may not read or write there.
	ErrPermission = errors.New("permission denied")
	// ErrUnsafePath: a path that could escape the destination, or a kind
	// of file that is never accepted. *UnsafePathError says which.
	ErrUnsafePath = errors.New("unsafe path")
	// ErrNotFound: a requested path does not exist.
	ErrNotFound = errors.New("not found")
	// ErrLimit: the peer asked for more than a configured limit allows
	// (entries, path length, chunk size, streams, transfers).
	ErrLimit = errors.New("limit exceeded")
	// ErrIntegrity: data does not match its hash or its declared size.
	ErrIntegrity = errors.New("integrity check failed")
	// ErrProtocol: the peer sent something malformed or out of place.
	ErrProtocol = errors.New("protocol error")
	// ErrTimeout: the peer sent nothing for longer than the idle timeout.
	ErrTimeout = errors.New("timed out")
	// ErrBusy: another transfer is writing the same file.
	ErrBusy = errors.New("busy")
	// ErrIncomplete: the transfer ended before every file was complete.
	// The partial files are kept; running the same command resumes.
	ErrIncomplete = errors.New("transfer incomplete")
)

// Code classifies an error sent over the protocol. Values are part of the
// wire format: never renumber.
type Code uint8

const (
	CodeFailed     Code = 1 // anything not listed below
	CodeProtocol   Code = 2
	CodeUnsafePath Code = 3
	CodeConflict   Code = 4
	CodeNoSpace    Code = 5
	CodeQuota      Code = 6
	CodePermission Code = 7
	CodeNotFound   Code = 8
	CodeLimit      Code = 9
	CodeIntegrity  Code = 10
	CodeTimeout    Code = 11
	CodeBusy       Code = 12
	CodeIncomplete Code = 13
	CodeVersion    Code = 14 // protocol version not spoken
	CodeCanceled   Code = 15 // the peer gave up (canceled, or failed on its side)
)

var codeErrors = [...]error{
	CodeProtocol:   ErrProtocol,
	CodeUnsafePath: ErrUnsafePath,
	CodeConflict:   ErrConflict,
	CodeNoSpace:    ErrNoSpace,
	CodeQuota:      ErrQuota,
	CodePermission: ErrPermission,
	CodeNotFound:   ErrNotFound,
	CodeLimit:      ErrLimit,
	CodeIntegrity:  ErrIntegrity,
	CodeTimeout:    ErrTimeout,
	CodeBusy:       ErrBusy,
	CodeIncomplete: ErrIncomplete,
	CodeVersion:    ErrProtocol,
}

// RemoteError is an error the peer reported over the protocol. It matches
// the sentinel of its Code with errors.Is.
type RemoteError struct {
	Code    Code
	Message string
	// Paths lists the files concerned (conflicts, incomplete files), at
	// most maxErrorPaths of them.
	Paths []string
}

func (e *RemoteError) Error() string { return "remote: " + e.Message }

// Unwrap returns the sentinel error of e's code, if any.
func (e *RemoteError) Unwrap() error {
	if int(e.Code) < len(codeErrors) {
		return codeErrors[e.Code]
	}
	return nil
}

// ConflictError lists the destination files an overwrite policy protects.
type ConflictError struct {
	Paths []string // relative to the destination directory
	Total int      // number of conflicts; Paths may hold fewer
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%d %s already %s at the destination: %s; choose another overwrite policy (newer, always, rename) or move %s away",
		e.Total, plural(e.Total, "file", "files"), plural(e.Total, "exists", "exist"),
		listPaths(e.Paths, e.Total), plural(e.Total, "it", "them"))
}

func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// UnsafePathError reports a path that is refused: one that could escape
// the destination, an unsupported kind of file, or a malformed name.
type UnsafePathError struct {
	Path   string
	Reason string
}

func (e *UnsafePathError) Error() string {
	return fmt.Sprintf("refusing path %q: %s", e.Path, e.Reason)
}

func (e *UnsafePathError) Is(target error) bool { return target == ErrUnsafePath }

// codeOf picks the wire code for err.
func codeOf(err error) Code {
	var re *RemoteError
	if errors.As(err, &re) {
		return re.Code
	}
	for c, s := range codeErrors {
		if s != nil && errors.Is(err, s) {
			return Code(c)
		}
	}
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return CodeNoSpace
	case errors.Is(err, fs.ErrPermission):
		return CodePermission
	case errors.Is(err, fs.ErrNotExist):
		return CodeNotFound
	}
	return CodeFailed
}

// pathsOf extracts the paths an error lists, for the wire.
func pathsOf(err error) []string {
	var ce *ConflictError
	if errors.As(err, &ce) {
		return ce.Paths
	}
	var re *RemoteError
	if errors.As(err, &re) {
		return re.Paths
	}
	var ie *incompleteError
	if errors.As(err, &ie) {
		return ie.paths
	}
	return nil
}

// maxErrorPaths bounds the paths an error carries and prints.
const maxErrorPaths = 20

func listPaths(paths []string, total int) string {
	s := strings.Join(paths, ", ")
	if total > len(paths) {
		s += fmt.Sprintf(" and %d more", total-len(paths))
	}
	return s
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

type incompleteError struct {
	paths []string
	total int
}

func (e *incompleteError) Error() string {
	return fmt.Sprintf("%d %s incomplete: %s; run the same command again to resume",
		e.total, plural(e.total, "file is", "files are"), listPaths(e.paths, e.total))
}

func (e *incompleteError) Is(target error) bool { return target == ErrIncomplete }

// bare strips the path from a filesystem error: a file opened through an
// os.Root carries its absolute name in its errors, and errors travel to
// the peer, which has no business knowing where this end keeps files.
// Callers name the file by its path in the transfer instead.
func bare(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

// protoErr is a protocol violation by the peer.
func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}

// wrapWriteErr names the file a write failed on, by its path in the
// transfer: the error travels to the peer, which has no business knowing
// where the receiver keeps its files. An out-of-space error is marked
// with ErrNoSpace.
func wrapWriteErr(name string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w writing %s: %v; free some space and run the same command again to resume", ErrNoSpace, name, err)
	}
	return fmt.Errorf("writing %s: %w", name, err)
}

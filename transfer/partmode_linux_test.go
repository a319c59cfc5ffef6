package transfer

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// A partial file that a commit sealed read-only (its fsync then failed,
// or the receiver was killed) is reopened for writing on the rerun: a
// receiver not running as root gets EACCES there, and without the repair
// the complete partial file could never be committed. Root ignores file
// modes, so the open runs on a thread without CAP_DAC_OVERRIDE.
func TestReopenReadOnlyPartial(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	name := ".f.0123456789abcdef.part"
	data := []byte("every chunk verified")
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o400); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	errc := make(chan error, 1)
	go func() {
		// The thread dies with this goroutine, still locked, so its
		// reduced capabilities never serve another goroutine.
		runtime.LockOSThread()
		if err := dropDACOverride(); err != nil {
			errc <- err
			return
		}
		f, err := openPart(root, name, false)
		if err == nil {
			_, err = f.WriteAt([]byte("E"), 0)
			f.Close()
		}
		errc <- err
	}()
	err = <-errc
	if err == errNoCapset {
		t.Skip("cannot drop CAP_DAC_OVERRIDE here")
	}
	if err != nil {
		t.Fatalf("reopening a read-only partial file: %v", err)
	}
	got, _ := os.ReadFile(filepath.Join(dir, name))
	if want := append([]byte("E"), data[1:]...); !bytes.Equal(got, want) {
		t.Errorf("partial file holds %q, want %q", got, want)
	}
}

var errNoCapset = errors.New("capabilities cannot be changed")

// dropDACOverride removes the capabilities that let root ignore file
// modes from the calling thread's effective set (capset acts on one
// thread; Go's syscall.Setuid would act on all).
func dropDACOverride() error {
	if os.Geteuid() != 0 {
		return nil
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var caps [2]unix.CapUserData
	if err := unix.Capget(&hdr, &caps[0]); err != nil {
		return errNoCapset
	}
	caps[0].Effective &^= 1<<unix.CAP_DAC_OVERRIDE | 1<<unix.CAP_DAC_READ_SEARCH
	if err := unix.Capset(&hdr, &caps[0]); err != nil {
		return errNoCapset
	}
	return nil
}

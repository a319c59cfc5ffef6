package transfer

import (
	"strings"
	"testing"
)

// TestIsInternal: the names partNames makes are internal, whatever the
// file's name; the user's files, dotfiles and files named like them are
// not.
func TestIsInternal(t *testing.T) {
	for _, final := range []string{"big.bin", "dir/.hidden", "a b.part", strings.Repeat("é", 200)} {
		part, journal := partNames(final, "0123456789abcdef")
		for _, p := range []string{part, journal} {
			base := p[strings.LastIndexByte(p, '/')+1:]
			if !IsInternal(base) {
				t.Errorf("IsInternal(%q) = false for a name partNames made", base)
			}
		}
	}
	for _, name := range []string{"big.bin", ".profile", "big.bin.part", ".big.bin.part", ".x.0123456789abcdeg.part", "x.0123456789abcdef.journal"} {
		if IsInternal(name) {
			t.Errorf("IsInternal(%q) = true for a user's file", name)
		}
	}
}

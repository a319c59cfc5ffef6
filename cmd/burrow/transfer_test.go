package main

import (
	"io"
	"slices"
	"strings"
	"testing"
)

func TestHoistFlags(t *testing.T) {
	app := newApp(strings.NewReader(""), io.Discard, io.Discard)
	for _, tc := range []struct{ in, want string }{
		{"burrow send wss://h ./a ./b --to inbox/ --compress", "burrow send --to inbox/ --compress wss://h ./a ./b"},
		{"burrow send --to x wss://h -", "burrow send --to x wss://h -"},
		{"burrow fetch wss://h inbox/a --to=- -q", "burrow fetch --to=- -q wss://h inbox/a"},
		{"burrow fetch wss://h inbox/a --parallel 8 -- --odd-name", "burrow fetch --parallel 8 wss://h inbox/a -- --odd-name"},
		{"burrow ls wss://h inbox --json", "burrow ls --json wss://h inbox"},
		// Other commands keep their own rules.
		{"burrow client wss://h 5432 --keepalive 5s", "burrow client wss://h 5432 --keepalive 5s"},
	} {
		got := hoistFlags(app, strings.Fields(tc.in))
		if !slices.Equal(got, strings.Fields(tc.want)) {
			t.Errorf("%q: got %q, want %q", tc.in, strings.Join(got, " "), tc.want)
		}
	}
}

package client_test

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/burrowtun/burrow/client"
)

// remoteValidCases covers every form in chisel's README and remote_test.go
// (with Burrow's 127.0.0.1 local default instead of chisel's 0.0.0.0), the
// forms in Burrow's docs, and edge cases.
var remoteValidCases = []struct {
	in     string
	want   client.Remote
	str    string // String()
	local  string // LocalAddr()
	remote string // RemoteAddr()
}{
	// chisel README examples.
	{
		in:   "3000",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 3000, RemoteHost: "127.0.0.1", RemotePort: 3000, Proto: "tcp"},
		str:  "127.0.0.1:3000=>127.0.0.1:3000", local: "127.0.0.1:3000", remote: "127.0.0.1:3000",
	},
	{
		in:   "example.com:3000",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 3000, RemoteHost: "example.com", RemotePort: 3000, Proto: "tcp"},
		str:  "127.0.0.1:3000=>example.com:3000", local: "127.0.0.1:3000", remote: "example.com:3000",
	},
	{
		in:   "3000:google.com:80",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 3000, RemoteHost: "google.com", RemotePort: 80, Proto: "tcp"},
		str:  "127.0.0.1:3000=>google.com:80", local: "127.0.0.1:3000", remote: "google.com:80",
	},
	{
		in:   "192.168.0.1:3000:google.com:80",
		want: client.Remote{LocalHost: "192.168.0.1", LocalPort: 3000, RemoteHost: "google.com", RemotePort: 80, Proto: "tcp"},
		str:  "192.168.0.1:3000=>google.com:80", local: "192.168.0.1:3000", remote: "google.com:80",
	},
	{
		in:   "socks",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 1080, Socks: true, Proto: "tcp"},
		str:  "127.0.0.1:1080=>socks", local: "127.0.0.1:1080", remote: "socks",
	},
	{
		in:   "5000:socks",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 5000, Socks: true, Proto: "tcp"},
		str:  "127.0.0.1:5000=>socks", local: "127.0.0.1:5000", remote: "socks",
	},
	{
		in:   "R:2222:localhost:22",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 2222, RemoteHost: "localhost", RemotePort: 22, Reverse: true, Proto: "tcp"},
		str:  "R:127.0.0.1:2222=>localhost:22", local: "127.0.0.1:2222", remote: "localhost:22",
	},
	{
		in:   "R:socks",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 1080, Socks: true, Reverse: true, Proto: "tcp"},
		str:  "R:127.0.0.1:1080=>socks", local: "127.0.0.1:1080", remote: "socks",
	},
	{
		in:   "R:5000:socks",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 5000, Socks: true, Reverse: true, Proto: "tcp"},
		str:  "R:127.0.0.1:5000=>socks", local: "127.0.0.1:5000", remote: "socks",
	},
	{
		in:   "stdio:example.com:22",
		want: client.Remote{RemoteHost: "example.com", RemotePort: 22, Stdio: true, Proto: "tcp"},
		str:  "stdio=>example.com:22", local: "stdio", remote: "example.com:22",
	},
	{
		in:   "1.1.1.1:53/udp",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 53, RemoteHost: "1.1.1.1", RemotePort: 53, Proto: "udp"},
		str:  "127.0.0.1:53=>1.1.1.1:53/udp", local: "127.0.0.1:53", remote: "1.1.1.1:53",
	},
	// chisel remote_test.go cases not above.
	{
		in:   "google.com:80",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 80, RemoteHost: "google.com", RemotePort: 80, Proto: "tcp"},
		str:  "127.0.0.1:80=>google.com:80", local: "127.0.0.1:80", remote: "google.com:80",
	},
	{
		in:   "R:google.com:80",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 80, RemoteHost: "google.com", RemotePort: 80, Reverse: true, Proto: "tcp"},
		str:  "R:127.0.0.1:80=>google.com:80", local: "127.0.0.1:80", remote: "google.com:80",
	},
	{
		in:   "示例網站.com:80",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 80, RemoteHost: "示例網站.com", RemotePort: 80, Proto: "tcp"},
		str:  "127.0.0.1:80=>示例網站.com:80", local: "127.0.0.1:80", remote: "示例網站.com:80",
	},
	{
		in:   "127.0.0.1:1081:socks",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 1081, Socks: true, Proto: "tcp"},
		str:  "127.0.0.1:1081=>socks", local: "127.0.0.1:1081", remote: "socks",
	},
	{
		in:   "localhost:5353:1.1.1.1:53/udp",
		want: client.Remote{LocalHost: "localhost", LocalPort: 5353, RemoteHost: "1.1.1.1", RemotePort: 53, Proto: "udp"},
		str:  "localhost:5353=>1.1.1.1:53/udp", local: "localhost:5353", remote: "1.1.1.1:53",
	},
	{
		in:   "[::1]:8080:google.com:80",
		want: client.Remote{LocalHost: "::1", LocalPort: 8080, RemoteHost: "google.com", RemotePort: 80, Proto: "tcp"},
		str:  "[::1]:8080=>google.com:80", local: "[::1]:8080", remote: "google.com:80",
	},
	{
		in:   "R:[::]:3000:[::1]:3000",
		want: client.Remote{LocalHost: "::", LocalPort: 3000, RemoteHost: "::1", RemotePort: 3000, Reverse: true, Proto: "tcp"},
		str:  "R:[::]:3000=>[::1]:3000", local: "[::]:3000", remote: "[::1]:3000",
	},
	// Burrow's documented forms.
	{
		in:   "[::1]:2222:[2001:db8::1]:22",
		want: client.Remote{LocalHost: "::1", LocalPort: 2222, RemoteHost: "2001:db8::1", RemotePort: 22, Proto: "tcp"},
		str:  "[::1]:2222=>[2001:db8::1]:22", local: "[::1]:2222", remote: "[2001:db8::1]:22",
	},
	{
		in:   "127.0.0.1:5000:socks",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 5000, Socks: true, Proto: "tcp"},
		str:  "127.0.0.1:5000=>socks", local: "127.0.0.1:5000", remote: "socks",
	},
	{
		in:   "5353:1.1.1.1:53/udp",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 5353, RemoteHost: "1.1.1.1", RemotePort: 53, Proto: "udp"},
		str:  "127.0.0.1:5353=>1.1.1.1:53/udp", local: "127.0.0.1:5353", remote: "1.1.1.1:53",
	},
	{
		in:   "R:5353:localhost:53/udp",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 5353, RemoteHost: "localhost", RemotePort: 53, Reverse: true, Proto: "udp"},
		str:  "R:127.0.0.1:5353=>localhost:53/udp", local: "127.0.0.1:5353", remote: "localhost:53",
	},
	{
		in:   "R:0.0.0.0:2222:localhost:22",
		want: client.Remote{LocalHost: "0.0.0.0", LocalPort: 2222, RemoteHost: "localhost", RemotePort: 22, Reverse: true, Proto: "tcp"},
		str:  "R:0.0.0.0:2222=>localhost:22", local: "0.0.0.0:2222", remote: "localhost:22",
	},
	// IPv6 on each side alone, with a zone, and IPv4-mapped.
	{
		in:   "[::1]:3000",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 3000, RemoteHost: "::1", RemotePort: 3000, Proto: "tcp"},
		str:  "127.0.0.1:3000=>[::1]:3000", local: "127.0.0.1:3000", remote: "[::1]:3000",
	},
	{
		in:   "[::1]:3000:example.com:80",
		want: client.Remote{LocalHost: "::1", LocalPort: 3000, RemoteHost: "example.com", RemotePort: 80, Proto: "tcp"},
		str:  "[::1]:3000=>example.com:80", local: "[::1]:3000", remote: "example.com:80",
	},
	{
		in:   "3000:[2001:db8::1]:80",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 3000, RemoteHost: "2001:db8::1", RemotePort: 80, Proto: "tcp"},
		str:  "127.0.0.1:3000=>[2001:db8::1]:80", local: "127.0.0.1:3000", remote: "[2001:db8::1]:80",
	},
	{
		in:   "[fe80::1%eth0]:3000:[fe80::2%eth0]:80",
		want: client.Remote{LocalHost: "fe80::1%eth0", LocalPort: 3000, RemoteHost: "fe80::2%eth0", RemotePort: 80, Proto: "tcp"},
		str:  "[fe80::1%eth0]:3000=>[fe80::2%eth0]:80", local: "[fe80::1%eth0]:3000", remote: "[fe80::2%eth0]:80",
	},
	{
		in:   "[::ffff:192.0.2.1]:443",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 443, RemoteHost: "::ffff:192.0.2.1", RemotePort: 443, Proto: "tcp"},
		str:  "127.0.0.1:443=>[::ffff:192.0.2.1]:443", local: "127.0.0.1:443", remote: "[::ffff:192.0.2.1]:443",
	},
	{
		in:   "R:[::]:2222:[::1]:22/udp",
		want: client.Remote{LocalHost: "::", LocalPort: 2222, RemoteHost: "::1", RemotePort: 22, Reverse: true, Proto: "udp"},
		str:  "R:[::]:2222=>[::1]:22/udp", local: "[::]:2222", remote: "[::1]:22",
	},
	{
		in:   "[::1]:1080:socks",
		want: client.Remote{LocalHost: "::1", LocalPort: 1080, Socks: true, Proto: "tcp"},
		str:  "[::1]:1080=>socks", local: "[::1]:1080", remote: "socks",
	},
	{
		in:   "stdio:[2001:db8::1]:22",
		want: client.Remote{RemoteHost: "2001:db8::1", RemotePort: 22, Stdio: true, Proto: "tcp"},
		str:  "stdio=>[2001:db8::1]:22", local: "stdio", remote: "[2001:db8::1]:22",
	},
	// Local port and remote port only: the remote host defaults.
	{
		in:   "3000:80",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 3000, RemoteHost: "127.0.0.1", RemotePort: 80, Proto: "tcp"},
		str:  "127.0.0.1:3000=>127.0.0.1:80", local: "127.0.0.1:3000", remote: "127.0.0.1:80",
	},
	{
		in:   "R:3000",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 3000, RemoteHost: "127.0.0.1", RemotePort: 3000, Reverse: true, Proto: "tcp"},
		str:  "R:127.0.0.1:3000=>127.0.0.1:3000", local: "127.0.0.1:3000", remote: "127.0.0.1:3000",
	},
	// Local port 0: any free port, for forward remotes.
	{
		in:   "0:example.com:80",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 0, RemoteHost: "example.com", RemotePort: 80, Proto: "tcp"},
		str:  "127.0.0.1:0=>example.com:80", local: "127.0.0.1:0", remote: "example.com:80",
	},
	{
		in:   "0:socks",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 0, Socks: true, Proto: "tcp"},
		str:  "127.0.0.1:0=>socks", local: "127.0.0.1:0", remote: "socks",
	},
	// Socks with a lone local host, as chisel accepts.
	{
		in:   "192.168.0.1:socks",
		want: client.Remote{LocalHost: "192.168.0.1", LocalPort: 1080, Socks: true, Proto: "tcp"},
		str:  "192.168.0.1:1080=>socks", local: "192.168.0.1:1080", remote: "socks",
	},
	{
		in:   "R:0.0.0.0:5000:socks",
		want: client.Remote{LocalHost: "0.0.0.0", LocalPort: 5000, Socks: true, Reverse: true, Proto: "tcp"},
		str:  "R:0.0.0.0:5000=>socks", local: "0.0.0.0:5000", remote: "socks",
	},
	// Stdio variants.
	{
		in:   "stdio:22",
		want: client.Remote{RemoteHost: "127.0.0.1", RemotePort: 22, Stdio: true, Proto: "tcp"},
		str:  "stdio=>127.0.0.1:22", local: "stdio", remote: "127.0.0.1:22",
	},
	{
		in:   "stdio:socks",
		want: client.Remote{Socks: true, Stdio: true, Proto: "tcp"},
		str:  "stdio=>socks", local: "stdio", remote: "socks",
	},
	{
		in:   "stdio:example.com:22/tcp",
		want: client.Remote{RemoteHost: "example.com", RemotePort: 22, Stdio: true, Proto: "tcp"},
		str:  "stdio=>example.com:22", local: "stdio", remote: "example.com:22",
	},
	// Protocol spellings: explicit tcp, any case, and on the local port as
	// chisel allows when both sides agree.
	{
		in:   "3000:google.com:80/tcp",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 3000, RemoteHost: "google.com", RemotePort: 80, Proto: "tcp"},
		str:  "127.0.0.1:3000=>google.com:80", local: "127.0.0.1:3000", remote: "google.com:80",
	},
	{
		in:   "1.1.1.1:53/UDP",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 53, RemoteHost: "1.1.1.1", RemotePort: 53, Proto: "udp"},
		str:  "127.0.0.1:53=>1.1.1.1:53/udp", local: "127.0.0.1:53", remote: "1.1.1.1:53",
	},
	{
		in:   "5353/udp:1.1.1.1:53/udp",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 5353, RemoteHost: "1.1.1.1", RemotePort: 53, Proto: "udp"},
		str:  "127.0.0.1:5353=>1.1.1.1:53/udp", local: "127.0.0.1:5353", remote: "1.1.1.1:53",
	},
	{
		in:   "3000/tcp:google.com:80",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 3000, RemoteHost: "google.com", RemotePort: 80, Proto: "tcp"},
		str:  "127.0.0.1:3000=>google.com:80", local: "127.0.0.1:3000", remote: "google.com:80",
	},
	{
		in:   "5353/udp:53/udp",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 5353, RemoteHost: "127.0.0.1", RemotePort: 53, Proto: "udp"},
		str:  "127.0.0.1:5353=>127.0.0.1:53/udp", local: "127.0.0.1:5353", remote: "127.0.0.1:53",
	},
	// Odd but valid: leading zeros, extreme ports, host names that are
	// keywords elsewhere, underscores.
	{
		in:   "03000:google.com:0080",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 3000, RemoteHost: "google.com", RemotePort: 80, Proto: "tcp"},
		str:  "127.0.0.1:3000=>google.com:80", local: "127.0.0.1:3000", remote: "google.com:80",
	},
	{
		in:   "65535:host:1",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 65535, RemoteHost: "host", RemotePort: 1, Proto: "tcp"},
		str:  "127.0.0.1:65535=>host:1", local: "127.0.0.1:65535", remote: "host:1",
	},
	{
		in:   "3000:socks:1080",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 3000, RemoteHost: "socks", RemotePort: 1080, Proto: "tcp"},
		str:  "127.0.0.1:3000=>socks:1080", local: "127.0.0.1:3000", remote: "socks:1080",
	},
	{
		in:   "R:R:22",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 22, RemoteHost: "R", RemotePort: 22, Reverse: true, Proto: "tcp"},
		str:  "R:127.0.0.1:22=>R:22", local: "127.0.0.1:22", remote: "R:22",
	},
	{
		in:   "my_service.internal:8080",
		want: client.Remote{LocalHost: "127.0.0.1", LocalPort: 8080, RemoteHost: "my_service.internal", RemotePort: 8080, Proto: "tcp"},
		str:  "127.0.0.1:8080=>my_service.internal:8080", local: "127.0.0.1:8080", remote: "my_service.internal:8080",
	},
}

func TestParseRemote(t *testing.T) {
	t.Parallel()
	for _, tt := range remoteValidCases {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := client.ParseRemote(tt.in)
			if err != nil {
				t.Fatalf("ParseRemote(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseRemote(%q)\n got %+v\nwant %+v", tt.in, got, tt.want)
			}
			if s := got.String(); s != tt.str {
				t.Errorf("String() = %q, want %q", s, tt.str)
			}
			if s := got.LocalAddr(); s != tt.local {
				t.Errorf("LocalAddr() = %q, want %q", s, tt.local)
			}
			if s := got.RemoteAddr(); s != tt.remote {
				t.Errorf("RemoteAddr() = %q, want %q", s, tt.remote)
			}
		})
	}
}

func TestRemoteSpecRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tt := range remoteValidCases {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			r, err := client.ParseRemote(tt.in)
			if err != nil {
				t.Fatalf("ParseRemote(%q): %v", tt.in, err)
			}
			spec := r.Spec()
			again, err := client.ParseRemote(spec)
			if err != nil {
				t.Fatalf("ParseRemote(Spec() = %q): %v", spec, err)
			}
			if again != r {
				t.Fatalf("ParseRemote(%q) = %+v, want %+v (from %q)", spec, again, r, tt.in)
			}
			if s := again.Spec(); s != spec {
				t.Errorf("Spec() is not a fixed point: %q then %q", spec, s)
			}
		})
	}
}

func TestRemoteSpecCanonical(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ in, spec string }{
		{"3000", "127.0.0.1:3000:127.0.0.1:3000"},
		{"socks", "127.0.0.1:1080:socks"},
		{"R:socks", "R:127.0.0.1:1080:socks"},
		{"stdio:example.com:22", "stdio:example.com:22"},
		{"stdio:socks", "stdio:socks"},
		{"1.1.1.1:53/UDP", "127.0.0.1:53:1.1.1.1:53/udp"},
		{"3000:google.com:80/tcp", "127.0.0.1:3000:google.com:80"},
		{"R:[::]:2222:[::1]:22/udp", "R:[::]:2222:[::1]:22/udp"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			r, err := client.ParseRemote(tt.in)
			if err != nil {
				t.Fatalf("ParseRemote(%q): %v", tt.in, err)
			}
			if s := r.Spec(); s != tt.spec {
				t.Errorf("Spec() = %q, want %q", s, tt.spec)
			}
		})
	}
}

// remoteInvalidCases are rejected; the error must contain want.
var remoteInvalidCases = []struct {
	in   string
	want string
}{
	// Empty input and empty fields.
	{"", "empty specification"},
	{"R:", `nothing after "R:"`},
	{":3000", "remote host is empty"},
	{"3000:", "remote port is empty"},
	{":3000:example.com:80", "local host is empty"},
	{"3000::80", "IPv6 address without brackets"}, // or an empty host; the message says both
	{"3000:example.com:", "remote port is empty"},
	// Ports.
	{"abc:def", `remote port "def" is not a number in 1-65535`},
	{"example.com:http", `remote port "http" is not a number in 1-65535`},
	{"0", `remote port "0" is not a number in 1-65535`},
	{"65536", `remote port "65536" is not a number in 1-65535`},
	{"99999999999999999999999", "is not a number in 1-65535"},
	{"3000:google.com:0", `remote port "0" is not a number in 1-65535`},
	{"3000:google.com:65536", `remote port "65536"`},
	{"+80", `remote port "+80"`},
	{"-1:google.com:80", `local port "-1" is not a number in 0-65535`},
	{"65536:google.com:80", `local port "65536"`},
	{"localhost:3000:80", `remote host "3000" is a number, not a host (is a field missing or extra?)`},
	{"stdio:example.com:0", `remote port "0"`},
	{"stdio:example.com:ssh", `remote port "ssh"`},
	{"70000:socks", `local port "70000"`},
	{"R:0:localhost:22", "local port 0 (any free port) is not allowed for a reverse remote"},
	{"R:0:socks", "local port 0 (any free port) is not allowed for a reverse remote"},
	// Too many or too few fields.
	{"1:2:3:4:5", "too many ':'-separated fields (5, at most 4)"},
	{"a.com:1:b.com:2:c.com", "too many ':'-separated fields (5, at most 4)"},
	{"a:1:b:socks", "too many ':'-separated fields before socks (3, at most 2)"},
	{"stdio", "stdio needs a target"},
	{"stdio:a.com:b.com:22", "too many ':'-separated fields after stdio"},
	{"stdio:127.0.0.1:3000:example.com:22", "too many ':'-separated fields after stdio"},
	{"3000:3000:80", `remote host "3000" is a number`},
	{"3000:google.com:80:", "remote port is empty"},
	// IPv6: brackets unbalanced, missing, or around something else.
	{"[::1:3000", "unbalanced '['"},
	{"3000:[::1:80", "unbalanced '['"},
	{"::1]:3000", "unbalanced ']'"},
	{"3000:google.com]:80", "unbalanced ']'"},
	{"[[::1]]:3000", "unbalanced '['"},
	{"[::1]x:3000", `unexpected "x:3000" after "[::1]"`},
	{"[::1]/udp", `unexpected "/udp" after "[::1]"`},
	{"::1:3000:example.com:80", "IPv6 address without brackets"},
	{"2001:db8::1:22", "IPv6 address without brackets"},
	{"3000:2001:db8::1:22", "IPv6 address without brackets"},
	{"[::1]:2222:2001:db8::1:22", "IPv6 address without brackets"},
	{"fe80::1", "IPv6 address without brackets"},
	{"::", "IPv6 address without brackets"},
	{"1:2:3:4:5:6:7:8", "IPv6 address without brackets"},
	{"[]:3000", "remote host [] is not an IPv6 address"},
	{"[example.com]:3000", "remote host [example.com] is not an IPv6 address"},
	{"[192.0.2.1]:3000:example.com:80", "local host [192.0.2.1] is not an IPv6 address"},
	{"[::1]", `remote port "[::1]" is not a number`},
	{"3000:[::1]", `remote port "[::1]" is not a number`},
	{"[fe80::1%eth/0]:22", "invalid character '/' in its zone"},
	// Hosts with characters that cannot be in a host.
	{"exa/mple.com:80", `remote host "exa/mple.com" contains '/'`},
	{"user@host:22", `remote host "user@host" contains '@'`},
	{"3000:host?x:80", `remote host "host?x" contains '?'`},
	{"3000:host#x:80", `remote host "host#x" contains '#'`},
	{"exa mple.com:80", "whitespace at byte 3"},
	{" 3000", "whitespace at byte 0"},
	{"3000:google.com:80 ", "whitespace at byte 18"},
	{"example.com\t:80", "whitespace"},
	{"example.com\n:80", "whitespace"},
	{"exa\x00mple.com:80", "control or non-printable character"},
	{"exa\x7fmple.com:80", "control or non-printable character"},
	{"\xff:80", "invalid UTF-8"},
	{"999.1.1.1:80", `remote host "999.1.1.1" is not a valid IPv4 address`},
	{"1.2.3:80", `remote host "1.2.3" is not a valid IPv4 address`},
	{strings.Repeat("a", 254) + ":80", "longer than 253 bytes"},
	{"http://example.com:80", `remote host "//example.com" contains '/'`},
	// Protocols.
	{"53/sctp", `unknown protocol "sctp" (only tcp and udp are supported); expected [R:]`},
	{"53/", `unknown protocol ""`},
	{"53/udp/tcp", `unknown protocol "udp/tcp"`},
	{"3000/sctp:google.com:80", `unknown protocol "sctp"`},
	{"3000/udp:google.com:80", "cross-protocol remotes are not supported: local port is udp but remote port is tcp"},
	{"3000/tcp:google.com:80/udp", "cross-protocol remotes are not supported: local port is tcp but remote port is udp"},
	// chisel's semantic errors.
	{"socks/udp", "socks does not support udp"},
	{"5000:socks/udp", "socks does not support udp"},
	{"R:socks/udp", "socks does not support udp"},
	{"5000/udp:socks", "socks does not support udp"},
	{"stdio:socks/udp", "socks does not support udp; expected stdio:socks"},
	{"R:stdio:example.com:22", "stdio cannot be reversed"},
	{"R:stdio:socks", "stdio cannot be reversed"},
	{"stdio:example.com:53/udp", "stdio does not support udp"},
	{"stdio:53/udp", "stdio does not support udp"},
}

func TestParseRemoteErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range remoteInvalidCases {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			r, err := client.ParseRemote(tt.in)
			if err == nil {
				t.Fatalf("ParseRemote(%q) = %+v, want an error containing %q", tt.in, r, tt.want)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("ParseRemote(%q) error\n  %s\nwant it to contain\n  %s", tt.in, msg, tt.want)
			}
			if prefix := "remote " + strconv.Quote(tt.in) + ": "; !strings.HasPrefix(msg, prefix) {
				t.Errorf("error %q does not start with %q, naming the input", msg, prefix)
			}
			if msg != strings.ToLower(msg[:1])+msg[1:] || strings.HasSuffix(msg, ".") {
				t.Errorf("error %q should start lowercase and have no trailing period", msg)
			}
			var se *client.RemoteSpecError
			if !errors.As(err, &se) {
				t.Fatalf("error %T is not a *client.RemoteSpecError", err)
			}
			if se.Spec != tt.in || se.Position != 0 {
				t.Errorf("RemoteSpecError{Spec: %q, Position: %d}, want {%q, 0}", se.Spec, se.Position, tt.in)
			}
			if r != (client.Remote{}) {
				t.Errorf("ParseRemote(%q) returned %+v with its error, want the zero Remote", tt.in, r)
			}
		})
	}
}

// TestParseRemoteErrorsSayWhatIsExpected checks that syntax errors show the
// form that was expected.
func TestParseRemoteErrorsSayWhatIsExpected(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ in, form string }{
		{"abc:def", "expected [R:][local-host:][local-port:][remote-host:]remote-port[/tcp|/udp]"},
		{"1:2:3:4:5", "expected [R:][local-host:][local-port:][remote-host:]remote-port[/tcp|/udp]"},
		{"a:1:b:socks", "expected [R:][local-host:][local-port:]socks"},
		{"socks/udp", "expected [R:][local-host:][local-port:]socks"},
		{"stdio", "expected stdio:[remote-host:]remote-port or stdio:socks"},
		{"R:stdio:example.com:22", "expected stdio:[remote-host:]remote-port or stdio:socks"},
		{"53/sctp", "only tcp and udp are supported"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			_, err := client.ParseRemote(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.form) {
				t.Errorf("ParseRemote(%q) error = %v, want it to contain %q", tt.in, err, tt.form)
			}
		})
	}
}

func TestParseRemotes(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		in       []string
		want     []string // Spec() of each result
		errs     []string // substrings of the error, when one is expected
		firstPos int      // Position of the *RemoteSpecError errors.As finds
	}{
		{name: "none", in: nil, want: []string{}},
		{
			name: "several",
			in:   []string{"3000", "R:2222:localhost:22", "socks", "stdio:example.com:22", "1.1.1.1:53/udp"},
			want: []string{
				"127.0.0.1:3000:127.0.0.1:3000",
				"R:127.0.0.1:2222:localhost:22",
				"127.0.0.1:1080:socks",
				"stdio:example.com:22",
				"127.0.0.1:53:1.1.1.1:53/udp",
			},
		},
		{
			name: "same port on different protocols, sides and hosts",
			in:   []string{"53:1.1.1.1:53", "53:1.1.1.1:53/udp", "R:53:1.1.1.1:53", "[::1]:53:1.1.1.1:53"},
			want: []string{
				"127.0.0.1:53:1.1.1.1:53",
				"127.0.0.1:53:1.1.1.1:53/udp",
				"R:127.0.0.1:53:1.1.1.1:53",
				"[::1]:53:1.1.1.1:53",
			},
		},
		{
			name: "any free port twice",
			in:   []string{"0:a.example:80", "0:b.example:80"},
			want: []string{"127.0.0.1:0:a.example:80", "127.0.0.1:0:b.example:80"},
		},
		{
			name:     "two stdio",
			in:       []string{"3000", "stdio:a.example:22", "stdio:b.example:22"},
			errs:     []string{`remote #3 "stdio:b.example:22": only one stdio remote is allowed; remote #2 "stdio:a.example:22" already uses stdin/stdout`},
			firstPos: 3,
		},
		{
			name:     "stdio socks and stdio",
			in:       []string{"stdio:socks", "stdio:22"},
			errs:     []string{`remote #2 "stdio:22": only one stdio remote is allowed; remote #1 "stdio:socks"`},
			firstPos: 2,
		},
		{
			name:     "one bad",
			in:       []string{"3000", "abc:def"},
			errs:     []string{`remote #2 "abc:def": remote port "def" is not a number in 1-65535`},
			firstPos: 2,
		},
		{
			name: "every bad one is reported",
			in:   []string{"R:stdio:x.example:22", "3000", "socks/udp"},
			errs: []string{
				`remote #1 "R:stdio:x.example:22": stdio cannot be reversed`,
				`remote #3 "socks/udp": socks does not support udp`,
			},
			firstPos: 1,
		},
		{
			name:     "same listener twice",
			in:       []string{"3000", "3000:example.com:80"},
			errs:     []string{`remote #2 "3000:example.com:80": the client already listens on 127.0.0.1:3000/tcp for remote #1 "3000"`},
			firstPos: 2,
		},
		{
			name:     "same socks listener twice",
			in:       []string{"socks", "1080:example.com:80"},
			errs:     []string{`remote #2 "1080:example.com:80": the client already listens on 127.0.0.1:1080/tcp for remote #1 "socks"`},
			firstPos: 2,
		},
		{
			name:     "same reverse listener twice",
			in:       []string{"R:2222:a.example:22", "R:2222:b.example:22"},
			errs:     []string{`remote #2 "R:2222:b.example:22": the server already listens on 127.0.0.1:2222/tcp for remote #1`},
			firstPos: 2,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := client.ParseRemotes(tt.in)
			if tt.errs != nil {
				if err == nil {
					t.Fatalf("ParseRemotes(%q) = %v, want an error", tt.in, got)
				}
				for _, want := range tt.errs {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("ParseRemotes(%q) error\n  %v\nwant it to contain\n  %s", tt.in, err, want)
					}
				}
				var se *client.RemoteSpecError
				if !errors.As(err, &se) || se.Position != tt.firstPos || se.Spec != tt.in[tt.firstPos-1] {
					t.Errorf("errors.As(%v) = %+v, want Position %d", err, se, tt.firstPos)
				}
				if got != nil {
					t.Errorf("ParseRemotes returned %v with its error, want nil", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRemotes(%q): %v", tt.in, err)
			}
			specs := make([]string, len(got))
			for i, r := range got {
				specs[i] = r.Spec()
			}
			if fmt.Sprint(specs) != fmt.Sprint(tt.want) || len(specs) != len(tt.want) {
				t.Errorf("ParseRemotes(%q) specs\n got %q\nwant %q", tt.in, specs, tt.want)
			}
		})
	}
}

func ExampleParseRemote() {
	for _, s := range []string{
		"3000:google.com:80",
		"socks",
		"R:2222:localhost:22",
		"stdio:example.com:22",
		"[::1]:5353:[2001:db8::1]:53/udp",
	} {
		r, err := client.ParseRemote(s)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("%-34s %-40s %s\n", s, r, r.Spec())
	}
	_, err := client.ParseRemote("abc:def")
	fmt.Println(err)
	// Output:
	// 3000:google.com:80                 127.0.0.1:3000=>google.com:80            127.0.0.1:3000:google.com:80
	// socks                              127.0.0.1:1080=>socks                    127.0.0.1:1080:socks
	// R:2222:localhost:22                R:127.0.0.1:2222=>localhost:22           R:127.0.0.1:2222:localhost:22
	// stdio:example.com:22               stdio=>example.com:22                    stdio:example.com:22
	// [::1]:5353:[2001:db8::1]:53/udp    [::1]:5353=>[2001:db8::1]:53/udp         [::1]:5353:[2001:db8::1]:53/udp
	// remote "abc:def": remote port "def" is not a number in 1-65535; expected [R:][local-host:][local-port:][remote-host:]remote-port[/tcp|/udp]
}

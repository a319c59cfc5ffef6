package client_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/burrowtun/burrow/client"
)

// FuzzParseRemote checks that ParseRemote never panics, that every error is
// a *RemoteSpecError naming the input, and that every successful parse
// round-trips through Spec.
func FuzzParseRemote(f *testing.F) {
	for _, tt := range remoteValidCases {
		f.Add(tt.in)
	}
	for _, tt := range remoteInvalidCases {
		f.Add(tt.in)
	}
	for _, s := range []string{
		"R:R:R:",
		"[",
		"]",
		"[]",
		"[:]:[:]",
		"[::1]:",
		"[::1]:[::1]:[::1]:[::1]",
		"stdio:stdio",
		"socks:socks",
		"stdio:socks:socks",
		"/udp",
		"3000/udp",
		"3000/udp:",
		"0",
		"0:0",
		"0:0:0:0",
		"R:[fe80::1%25eth0]:22:[fe80::2%lo]:22",
		"[::ffff:1.2.3.4]:1",
		"ünïcödé.example:443",
		"1.1.1.1:53/Udp",
		"3000:example.com:80/tcp/udp",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := client.ParseRemote(s)
		if err != nil {
			var se *client.RemoteSpecError
			if !errors.As(err, &se) || se.Spec != s {
				t.Fatalf("ParseRemote(%q) error %v (%T) is not a *RemoteSpecError for the input", s, err, err)
			}
			if r != (client.Remote{}) {
				t.Fatalf("ParseRemote(%q) returned %+v with error %v", s, r, err)
			}
			return
		}
		if r.Proto != "tcp" && r.Proto != "udp" {
			t.Fatalf("ParseRemote(%q).Proto = %q", s, r.Proto)
		}
		if r.Stdio != (r.LocalHost == "") || (r.Socks != (r.RemoteHost == "")) {
			t.Fatalf("ParseRemote(%q) = %+v: empty hosts must match Stdio and Socks", s, r)
		}
		if r.Stdio && r.Reverse || r.Socks && r.Proto == "udp" || r.Stdio && r.Proto == "udp" {
			t.Fatalf("ParseRemote(%q) = %+v: a combination chisel rejects", s, r)
		}
		if !r.Socks && (r.RemotePort < 1 || r.RemotePort > 65535) ||
			r.LocalPort < 0 || r.LocalPort > 65535 || r.Reverse && r.LocalPort == 0 {
			t.Fatalf("ParseRemote(%q) = %+v: port out of range", s, r)
		}
		spec := r.Spec()
		again, err := client.ParseRemote(spec)
		if err != nil {
			t.Fatalf("ParseRemote(%q) = %+v, but its Spec() %q does not parse: %v", s, r, spec, err)
		}
		if again != r {
			t.Fatalf("ParseRemote(%q) = %+v, but ParseRemote(Spec() = %q) = %+v", s, r, spec, again)
		}
		if strings.ContainsAny(r.String(), " \t\n") {
			t.Fatalf("String() %q contains whitespace", r.String())
		}
		if _, err := client.ParseRemotes([]string{s, spec}); err == nil && !(r.LocalPort == 0 && !r.Stdio) {
			t.Fatalf("ParseRemotes(%q, %q) accepted the same listener twice", s, spec)
		}
	})
}

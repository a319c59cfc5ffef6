package daemon

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseTrustedProxies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      []string
		want    []string
		wantErr string
	}{
		{name: "none", in: nil, want: nil},
		{name: "cidr", in: []string{"10.0.0.0/8"}, want: []string{"10.0.0.0/8"}},
		{name: "v4 address", in: []string{"192.0.2.7"}, want: []string{"192.0.2.7/32"}},
		{name: "v6 address", in: []string{"2001:db8::1"}, want: []string{"2001:db8::1/128"}},
		{name: "v6 cidr and v4", in: []string{"fd00::/8", "127.0.0.1"}, want: []string{"fd00::/8", "127.0.0.1/32"}},
		{name: "host name", in: []string{"proxy.internal"}, wantErr: `--trusted-proxy "proxy.internal": want a CIDR such as 10.0.0.0/8 or an address`},
		{name: "bad bits", in: []string{"10.0.0.0/33"}, wantErr: `--trusted-proxy "10.0.0.0/33"`},
		{name: "one bad of two", in: []string{"10.0.0.0/8", "10.0.0.0/x"}, wantErr: `"10.0.0.0/x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseTrustedProxies(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var gotS []string
			for _, p := range got {
				gotS = append(gotS, p.String())
			}
			if !slices.Equal(gotS, tt.want) {
				t.Fatalf("got %v, want %v", gotS, tt.want)
			}
		})
	}
}

func TestPlainAllowed(t *testing.T) {
	t.Parallel()
	proxy := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	tests := []struct {
		listen  string
		trusted []netip.Prefix
		ok      bool
	}{
		{"127.0.0.1:8080", nil, true},
		{"[::1]:8080", nil, true},
		{"localhost:8080", nil, true},
		{"127.3.4.5:80", nil, true},
		{":8080", nil, false},
		{"0.0.0.0:8080", nil, false},
		{"192.0.2.1:8080", nil, false},
		{"example.com:8080", nil, false},
		{"not an address", nil, false},
		{":8080", proxy, true},
	}
	for _, tt := range tests {
		err := plainAllowed(tt.listen, tt.trusted)
		if (err == nil) != tt.ok {
			t.Errorf("plainAllowed(%q, %v) = %v, want ok=%v", tt.listen, tt.trusted, err, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "--listen "+tt.listen) {
			t.Errorf("error %q does not name the listen address", err)
		}
	}
}

func TestNewBackend(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	for _, bad := range []string{"ftp://example.com", "example.com", "http://", "://x", "http:///path"} {
		if _, err := newBackend(bad, log); err == nil || !strings.Contains(err.Error(), "want an http:// or https:// URL") {
			t.Errorf("newBackend(%q) = %v, want a URL error", bad, err)
		}
	}
	h, err := newBackend("", log)
	if err != nil || h != nil {
		t.Fatalf("newBackend(\"\") = %v, %v; want no handler", h, err)
	}

	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "site says "+r.URL.Path)
	}))
	t.Cleanup(site.Close)
	h, err = newBackend(site.URL, log)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/about", nil))
	if got := rec.Body.String(); got != "site says /about" {
		t.Fatalf("proxied body = %q", got)
	}
}

func TestCheckFilesRoot(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	os.WriteFile(file, nil, 0o600)
	if got, err := checkFilesRoot(""); got != "" || err != nil {
		t.Errorf("empty root = %q, %v", got, err)
	}
	if got, err := checkFilesRoot(dir); got != dir || err != nil {
		t.Errorf("dir root = %q, %v", got, err)
	}
	for _, bad := range []string{file, filepath.Join(dir, "missing")} {
		if _, err := checkFilesRoot(bad); err == nil || !strings.Contains(err.Error(), "is not a directory; create it (mkdir -p ") {
			t.Errorf("checkFilesRoot(%q) = %v", bad, err)
		}
	}
}

package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/go-ntlmssp"
)

func TestProxyFromEnvironment(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		host string
		want string // "" for no proxy
	}{
		{"https proxy", map[string]string{"HTTPS_PROXY": "http://p:3128"}, "example.com:443", "http://p:3128"},
		{"lower case", map[string]string{"https_proxy": "p:8080"}, "example.com:443", "http://p:8080"},
		{"all proxy", map[string]string{"ALL_PROXY": "socks5h://s"}, "example.com:443", "socks5h://s:1080"},
		{"https wins over all", map[string]string{"HTTPS_PROXY": "http://a:1", "ALL_PROXY": "http://b:2"}, "x:443", "http://a:1"},
		{"loopback is proxied", map[string]string{"HTTPS_PROXY": "http://p:3128"}, "127.0.0.1:8443", "http://p:3128"},
		{"no_proxy name", map[string]string{"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com"}, "example.com:443", ""},
		{"no_proxy suffix", map[string]string{"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".example.com"}, "a.example.com:443", ""},
		{"no_proxy suffix no dot", map[string]string{"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com"}, "a.example.com:443", ""},
		{"no_proxy not a suffix", map[string]string{"HTTPS_PROXY": "http://p:1", "NO_PROXY": "ample.com"}, "example.com:443", "http://p:1"},
		{"no_proxy ip", map[string]string{"HTTPS_PROXY": "http://p:1", "NO_PROXY": "127.0.0.1"}, "127.0.0.1:8443", ""},
		{"no_proxy cidr", map[string]string{"HTTPS_PROXY": "http://p:1", "no_proxy": "10.0.0.0/8"}, "10.1.2.3:443", ""},
		{"no_proxy ipv6", map[string]string{"HTTPS_PROXY": "http://p:1", "NO_PROXY": "::1"}, "[::1]:443", ""},
		{"no_proxy star", map[string]string{"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, "x:443", ""},
		{"nothing", map[string]string{}, "x:443", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := ProxyFromEnvironment(func(k string) string { return tt.env[k] }, tt.host)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if u != nil {
				got = u.String()
			}
			if got != tt.want {
				t.Fatalf("proxy for %s = %q, want %q", tt.host, got, tt.want)
			}
		})
	}
	if _, err := ParseProxyURL("ftp://p:1"); err == nil || !strings.Contains(err.Error(), "not supported") {
		t.Fatalf("ftp proxy: %v", err)
	}
	if _, err := ParseProxyURL("http://user:hunter2@p:1/x%zz"); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("bad proxy URL error %v must not show the password", err)
	}
}

// fakeProxy answers CONNECT with answer(request) and, on 200, echoes.
func fakeProxy(t *testing.T, answer func(r *http.Request, n int) (int, http.Header)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for n := 0; ; n++ {
					r, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					code, h := answer(r, n)
					resp := &http.Response{StatusCode: code, ProtoMajor: 1, ProtoMinor: 1, Header: h, ContentLength: 0}
					resp.Write(c)
					if code == http.StatusOK {
						io.Copy(c, br)
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

func TestSanitizeNTLMChallenge(t *testing.T) {
	// squid 5.7's ntlm_fake_auth challenge: TargetName's offset is
	// garbage and the target-info flag is set with no target info.
	raw, err := base64.StdEncoding.DecodeString("TlRMTVNTUAACAAAACQAJAK6qqqoBkoigQl5KWYIUBw4AAAAAAAA6AFdPUktHUk9VUA==")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ntlmssp.ProcessChallenge(raw, "bob", "pw", false); err == nil {
		t.Log("go-ntlmssp now accepts the raw challenge; the sanitizer may be unnecessary")
	}
	auth, err := ntlmssp.ProcessChallenge(sanitizeNTLMChallenge(raw), "bob", "pw", false)
	if err != nil || len(auth) == 0 {
		t.Fatalf("sanitized challenge: %v", err)
	}
	if !bytes.Equal(sanitizeNTLMChallenge(raw)[24:32], raw[24:32]) {
		t.Fatal("the server challenge itself was changed")
	}
}

func TestConnectProxy(t *testing.T) {
	basic := func(r *http.Request, _ int) (int, http.Header) {
		if r.Header.Get("Proxy-Authorization") == "Basic dTpw" { // u:p
			return http.StatusOK, http.Header{}
		}
		return http.StatusProxyAuthRequired, http.Header{"Proxy-Authenticate": {`Basic realm="x"`}}
	}
	addr := fakeProxy(t, basic)
	for _, tc := range []struct {
		creds   string
		wantErr string
	}{
		{"u:p@", ""},
		{"u:wrong@", "407"},
		{"", "407"},
	} {
		u, _ := ParseProxyURL("http://" + tc.creds + addr)
		d := &proxyDialer{proxy: u, forward: &net.Dialer{}, timeout: 5 * time.Second}
		conn, err := d.DialContext(context.Background(), "tcp", "server.example:443")
		if tc.wantErr == "" {
			if err != nil {
				t.Fatalf("creds %q: %v", tc.creds, err)
			}
			conn.Write([]byte("ping"))
			b := make([]byte, 4)
			io.ReadFull(conn, b)
			conn.Close()
			if string(b) != "ping" {
				t.Fatalf("tunnel through the proxy echoed %q", b)
			}
			continue
		}
		var pe *ProxyError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), addr) {
			t.Fatalf("creds %q: %v, want a ProxyError naming the proxy and %s", tc.creds, err, tc.wantErr)
		}
		if strings.Contains(err.Error(), "wrong") {
			t.Fatalf("error shows the proxy password: %v", err)
		}
	}
	forbidden := fakeProxy(t, func(*http.Request, int) (int, http.Header) { return http.StatusForbidden, http.Header{} })
	u, _ := ParseProxyURL("http://" + forbidden)
	_, err := (&proxyDialer{proxy: u, forward: &net.Dialer{}, timeout: 5 * time.Second}).DialContext(context.Background(), "tcp", "x:8443")
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "port 443") {
		t.Fatalf("refused CONNECT: %v", err)
	}
}

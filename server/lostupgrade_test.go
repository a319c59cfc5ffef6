package server_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/burrowtun/burrow/mux"
	"github.com/burrowtun/burrow/server"
)

// stripUpgrade is a proxy that does not pass WebSocket: it removes the
// upgrade headers, as squid does by default, and adds its Via.
func stripUpgrade(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("Upgrade")
		r.Header.Del("Connection")
		r.Header.Add("Via", "1.1 corp-proxy (squid/5.7)")
		next.ServeHTTP(w, r)
	})
}

// TestLostUpgrade: a tunnel request whose upgrade a proxy removed is
// answered, once its credentials pass, with 426 and the Via it came
// through, which the client reads as the proxy's doing; without valid
// credentials it learns no more than before.
func TestLostUpgrade(t *testing.T) {
	f := newFixtureBehind(t, server.Config{}, stripUpgrade, ".*")
	_, err := f.dial(t, "bob", "bob-secret")
	var he *mux.HandshakeError
	if !errors.As(err, &he) || he.StatusCode != http.StatusUpgradeRequired || !he.UpgradeRemoved ||
		he.Via != "1.1 corp-proxy (squid/5.7)" {
		t.Fatalf("dial through a proxy that removes upgrades = %v (%+v), want 426 naming the proxy's Via", err, he)
	}
	if !strings.Contains(f.logs.String(), "a proxy on the way removed it") || !strings.Contains(f.logs.String(), "corp-proxy") {
		t.Errorf("the server's log does not say what happened:\n%s", f.logs)
	}
	for _, pw := range []string{"wrong", ""} {
		_, err = f.dial(t, "bob", pw)
		if !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized || he.UpgradeRemoved {
			t.Fatalf("password %q through the proxy = %v, want a plain 401", pw, err)
		}
	}

	// Without the proxy, and for requests that are not tunnel requests,
	// nothing changes.
	direct := newFixture(t, server.Config{}, ".*")
	sess, err := direct.dial(t, "bob", "bob-secret")
	if err != nil {
		t.Fatalf("direct dial: %v", err)
	}
	sess.Close()
	req, _ := http.NewRequest(http.MethodGet, f.http.URL+"/", nil)
	req.SetBasicAuth("bob", "bob-secret")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Protocol", "other.v1")
	resp, err := f.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get(mux.UpgradeRemovedHeader) != "" {
		t.Fatalf("a GET naming another subprotocol: %d %v, want the plain 404", resp.StatusCode, resp.Header)
	}
}

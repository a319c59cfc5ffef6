package client

import (
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestTransportMemory: what got through is remembered per server and
// proxy, for a day, without the proxy's credentials; WebSocket is
// remembered by forgetting.
func TestTransportMemory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "burrow", "transports")
	proxy, _ := url.Parse("http://bob:s3cret@proxy.corp:3128")
	viaProxy := &Client{cfg: Config{URL: "wss://tunnel.example:443", Proxy: proxy, TransportMemory: file}}
	direct := &Client{cfg: Config{URL: "wss://tunnel.example:443", TransportMemory: file}}
	other := &Client{cfg: Config{URL: "wss://other.example:443", Proxy: proxy, TransportMemory: file}}

	if got := viaProxy.remembered(); got != TransportAuto {
		t.Fatalf("nothing recorded yet, remembered %v", got)
	}
	viaProxy.remember(TransportPoll)
	other.remember(TransportStream)
	for _, tc := range []struct {
		c    *Client
		want Transport
	}{{viaProxy, TransportPoll}, {direct, TransportAuto}, {other, TransportStream}} {
		if got := tc.c.remembered(); got != tc.want {
			t.Errorf("%s: remembered %v, want %v", tc.c.memoryKey(), got, tc.want)
		}
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "s3cret") || strings.Contains(string(data), "bob") {
		t.Errorf("the memory holds the proxy's credentials:\n%s", data)
	}

	viaProxy.remember(TransportWebSocket)
	if got, kept := viaProxy.remembered(), other.remembered(); got != TransportAuto || kept != TransportStream {
		t.Errorf("after WebSocket got through: remembered %v (want auto), the other path %v (want stream)", got, kept)
	}

	old := time.Now().Add(-memoryTTL - time.Minute).Unix()
	os.WriteFile(file, []byte("poll "+strconv.FormatInt(old, 10)+" "+direct.memoryKey()+"\ngarbage\n"), 0o600)
	if got := direct.remembered(); got != TransportAuto {
		t.Errorf("an entry older than a day: remembered %v", got)
	}
}

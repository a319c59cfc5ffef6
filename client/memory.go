package client

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// memoryTTL is how long a transport that got through is taken as what
// gets through: a network that changes is probed again within a day.
const memoryTTL = 24 * time.Hour

// memoryKey names the path to the server for the transport memory: the
// server's URL and the proxy's scheme and address, never its
// credentials.
func (c *Client) memoryKey() string {
	key := c.cfg.URL
	if p := c.cfg.Proxy; p != nil {
		key += " via " + p.Scheme + "://" + p.Host
	}
	return strings.ReplaceAll(key, "\n", "")
}

// remembered is the transport recorded in c.cfg.TransportMemory for the
// path to the server, or TransportAuto.
func (c *Client) remembered() Transport {
	if c.cfg.TransportMemory == "" {
		return TransportAuto
	}
	data, err := os.ReadFile(c.cfg.TransportMemory)
	if err != nil {
		return TransportAuto
	}
	key := c.memoryKey()
	for line := range strings.Lines(string(data)) {
		t, at, k, ok := parseMemoryLine(line)
		if ok && k == key && time.Since(at) < memoryTTL {
			return t
		}
	}
	return TransportAuto
}

// remember records t for the path to the server in
// c.cfg.TransportMemory, replacing the file whole; WebSocket is recorded
// by forgetting the path, as it is what is tried first anyway. A failure
// to write costs only a probe next time, and is not reported.
func (c *Client) remember(t Transport) {
	if c.cfg.TransportMemory == "" {
		return
	}
	key := c.memoryKey()
	var out bytes.Buffer
	if data, err := os.ReadFile(c.cfg.TransportMemory); err == nil {
		for line := range strings.Lines(string(data)) {
			if _, at, k, ok := parseMemoryLine(line); ok && k != key && time.Since(at) < memoryTTL {
				out.WriteString(strings.TrimRight(line, "\n") + "\n")
			}
		}
	}
	if t != TransportWebSocket && t != TransportAuto {
		fmt.Fprintf(&out, "%s %d %s\n", t, time.Now().Unix(), key)
	}
	dir := filepath.Dir(c.cfg.TransportMemory)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return
	}
	tmp, err := os.CreateTemp(dir, ".transports-*")
	if err != nil {
		return
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(out.Bytes()); err != nil || tmp.Close() != nil {
		tmp.Close()
		return
	}
	os.Rename(tmp.Name(), c.cfg.TransportMemory)
}

// parseMemoryLine reads "<transport> <unix time> <key>".
func parseMemoryLine(line string) (Transport, time.Time, string, bool) {
	fields := strings.SplitN(strings.TrimRight(line, "\n"), " ", 3)
	if len(fields) != 3 {
		return 0, time.Time{}, "", false
	}
	t, err := ParseTransport(fields[0])
	secs, err2 := strconv.ParseInt(fields[1], 10, 64)
	if err != nil || err2 != nil || t == TransportAuto {
		return 0, time.Time{}, "", false
	}
	return t, time.Unix(secs, 0), fields[2], true
}

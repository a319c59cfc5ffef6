package certs

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// KnownServers is a file of server keys recorded on first use, as ssh's known_hosts: a client that pins
// nothing, connecting to a server whose certificate no trusted CA signed, accepts the key the file records
// for that server, records a new server's key when AcceptNew is set, and refuses a key that differs from
// the recorded one.
//
// The file holds one server per line, "host:port fingerprint", where host:port is the address the client
// dials and fingerprint is the server key's Fingerprint; blank lines and lines starting with '#' are
// ignored. Where a server appears more than once the first line counts.
type KnownServers struct {
	// Path is the file; it and its directory are created (0600, 0700) when a key is first recorded.
	Path string
	// AcceptNew records the key of a server the file does not name, instead of refusing it.
	AcceptNew bool
	// Recorded, if set, is called after a new server's key was written to the file.
	Recorded func(server, fingerprint string)
}

// DefaultKnownServersPath is where the client keeps its known servers: known_servers in a burrow directory
// under the user's configuration directory (os.UserConfigDir: $XDG_CONFIG_HOME or ~/.config on Linux).
func DefaultKnownServersPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find the directory for known servers: %w", err)
	}
	return filepath.Join(dir, "burrow", "known_servers"), nil
}

// UnknownServerError is the refusal of a server that the known servers file does not name, without
// KnownServers.AcceptNew.
type UnknownServerError struct {
	Server, Fingerprint, Path string
}

func (e *UnknownServerError) Error() string {
	return fmt.Sprintf("no trusted CA signed the certificate of %s and %s does not record it; "+
		"if its key fingerprint %s is what 'burrow cert fingerprint' prints on the server, "+
		"connect once with --accept-new to record it (or pass --fingerprint or --ca)", e.Server, e.Path, e.Fingerprint)
}

// ChangedKeyError is the refusal of a server whose key is not the one the known servers file records.
type ChangedKeyError struct {
	Server, Recorded, Got, Path string
	Line                        int
}

func (e *ChangedKeyError) Error() string {
	return fmt.Sprintf("the key of %s changed: %s line %d records fingerprint %s, the server now shows %s; "+
		"someone may be intercepting the connection, and if the server's key was replaced on purpose, "+
		"delete that line and connect with --accept-new", e.Server, e.Path, e.Line, e.Recorded, e.Got)
}

// knownEntry is one line of the file.
type knownEntry struct {
	server      string
	fingerprint []byte
	line        int
}

// parseKnownServers reads the file's content; an entry it cannot read is an error naming its line, so that
// a typo never passes for an unknown server.
func parseKnownServers(data []byte) ([]knownEntry, error) {
	var entries []knownEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 || !validServer(fields[0]) {
			return nil, fmt.Errorf("line %d: want \"host:port fingerprint\"", n)
		}
		fp, err := ParseFingerprint(fields[1])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		entries = append(entries, knownEntry{server: fields[0], fingerprint: fp, line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return entries, nil
}

// validServer reports whether s reads as host:port with a non-empty host and port and nothing that could
// break the file's line format.
func validServer(s string) bool {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || i == len(s)-1 || strings.ContainsAny(s, " \t\r\n#") {
		return false
	}
	for _, c := range s[i+1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// Check accepts got, the hex fingerprint of the key server presented, if the file records that key for
// server; records it if the file does not name server and AcceptNew is set; and otherwise refuses it with a
// *ChangedKeyError or an *UnknownServerError.
func (k *KnownServers) Check(server, got string) error {
	gotKey, err := ParseFingerprint(got)
	if err != nil {
		return err
	}
	if !validServer(server) {
		return fmt.Errorf("cannot record server %q: want host:port", server)
	}
	data, err := os.ReadFile(k.Path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read known servers: %w", err)
	}
	entries, err := parseKnownServers(data)
	if err != nil {
		return fmt.Errorf("known servers file %s %w; fix or delete that line", k.Path, err)
	}
	for _, e := range entries {
		if e.server != server {
			continue
		}
		if subtle.ConstantTimeCompare(e.fingerprint, gotKey) == 1 {
			return nil
		}
		return &ChangedKeyError{Server: server, Recorded: hex.EncodeToString(e.fingerprint),
			Got: hex.EncodeToString(gotKey), Path: k.Path, Line: e.line}
	}
	if !k.AcceptNew {
		return &UnknownServerError{Server: server, Fingerprint: hex.EncodeToString(gotKey), Path: k.Path}
	}
	if err := k.record(server, hex.EncodeToString(gotKey), data); err != nil {
		return err
	}
	if k.Recorded != nil {
		k.Recorded(server, hex.EncodeToString(gotKey))
	}
	return nil
}

// record appends server's line to the file, after a newline if what was read did not end with one.
func (k *KnownServers) record(server, fingerprint string, read []byte) error {
	if err := os.MkdirAll(filepath.Dir(k.Path), 0o700); err != nil {
		return fmt.Errorf("record the server's key: %w", err)
	}
	f, err := os.OpenFile(k.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("record the server's key: %w", err)
	}
	line := server + " " + fingerprint + "\n"
	if len(read) > 0 && read[len(read)-1] != '\n' {
		line = "\n" + line
	}
	_, err = f.WriteString(line)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("record the server's key in %s: %w", k.Path, err)
	}
	return nil
}

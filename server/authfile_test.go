package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Reference vectors from other implementations: phc-winner-argon2's src/test.c and x/crypto's
// bcrypt_test.go.
const (
	refArgon2id = "$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4" // "password"
	refBcrypt   = "$2a$10$XajjQvNhvvRt5GSeFk1xFeyqRrsxkhBkUiQeg0dt.wU1qD4aFDcga"                         // "allmine"
)

// cheapHash returns a bcrypt hash at the minimum cost, to keep tests fast.
func cheapHash(t testing.TB, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// cheapArgon returns an argon2id hash with tiny parameters.
func cheapArgon(password string) string {
	return argonParams{memory: 8, time: 1, threads: 1, keyLen: 16}.hash(password)
}

// authJSON returns an authfile holding users.
func authJSON(t testing.TB, users map[string]fileUser) []byte {
	t.Helper()
	data, err := json.Marshal(authFile{Users: users})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func mustParse(t testing.TB, data []byte) *Users {
	t.Helper()
	us, err := ParseUsers(data)
	if err != nil {
		t.Fatal(err)
	}
	return us
}

func TestVerifyPassword(t *testing.T) {
	t.Parallel()
	argon, err := HashPassword("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(argon, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("HashPassword = %q, want OWASP parameters", argon)
	}
	tests := []struct {
		name, hash, password string
		want                 bool
	}{
		{"argon2id", argon, "s3cret", true},
		{"argon2id wrong", argon, "s3cret ", false},
		{"argon2id empty password", argon, "", false},
		{"argon2id reference", refArgon2id, "password", true},
		{"argon2id reference wrong", refArgon2id, "Password", false},
		{"bcrypt 2a", refBcrypt, "allmine", true},
		{"bcrypt 2b", strings.Replace(refBcrypt, "$2a$", "$2b$", 1), "allmine", true},
		{"bcrypt 2y", strings.Replace(refBcrypt, "$2a$", "$2y$", 1), "allmine", true},
		{"bcrypt wrong", refBcrypt, "allmine2", false},
		{"bcrypt generated", cheapHash(t, "pw"), "pw", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := VerifyPassword(tt.hash, tt.password)
			if err != nil || got != tt.want {
				t.Errorf("VerifyPassword = %v, %v; want %v, nil", got, err, tt.want)
			}
		})
	}
}

func TestHashPasswordSalted(t *testing.T) {
	t.Parallel()
	a, errA := HashPassword("same")
	b, errB := HashPassword("same")
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	if a == b {
		t.Error("two hashes of the same password are equal; the salt is not random")
	}
	if _, err := HashPassword(""); err == nil {
		t.Error("HashPassword accepted an empty password")
	}
}

func TestVerifyPasswordMalformed(t *testing.T) {
	t.Parallel()
	const salt, key = "c29tZXNhbHQ", "nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4"
	tests := []struct{ name, hash string }{
		{"empty", ""},
		{"plain text", "hunter2"},
		{"argon2i", "$argon2i$v=19$m=256,t=2,p=1$" + salt + "$" + key},
		{"argon2id no fields", "$argon2id$"},
		{"missing key", "$argon2id$v=19$m=256,t=2,p=1$" + salt},
		{"extra field", refArgon2id + "$x"},
		{"old version", "$argon2id$v=16$m=256,t=2,p=1$" + salt + "$" + key},
		{"no version", "$argon2id$m=256,t=2,p=1$" + salt + "$" + key + "$"},
		{"params out of order", "$argon2id$v=19$t=2,m=256,p=1$" + salt + "$" + key},
		{"two params", "$argon2id$v=19$m=256,t=2$" + salt + "$" + key},
		{"param not a number", "$argon2id$v=19$m=lots,t=2,p=1$" + salt + "$" + key},
		{"negative param", "$argon2id$v=19$m=-256,t=2,p=1$" + salt + "$" + key},
		{"zero time", "$argon2id$v=19$m=256,t=0,p=1$" + salt + "$" + key},
		{"zero threads", "$argon2id$v=19$m=256,t=2,p=0$" + salt + "$" + key},
		{"too many threads", "$argon2id$v=19$m=65536,t=2,p=256$" + salt + "$" + key},
		{"memory below 8p", "$argon2id$v=19$m=7,t=2,p=1$" + salt + "$" + key},
		{"memory too big", "$argon2id$v=19$m=4294967295,t=2,p=1$" + salt + "$" + key},
		{"memory overflows uint32", "$argon2id$v=19$m=4294967296,t=2,p=1$" + salt + "$" + key},
		{"time too big", "$argon2id$v=19$m=256,t=1000,p=1$" + salt + "$" + key},
		{"salt not base64", "$argon2id$v=19$m=256,t=2,p=1$!!!!$" + key},
		{"salt padded", "$argon2id$v=19$m=256,t=2,p=1$" + salt + "=$" + key},
		{"salt too short", "$argon2id$v=19$m=256,t=2,p=1$c29tZQ$" + key},
		{"key not base64", "$argon2id$v=19$m=256,t=2,p=1$" + salt + "$***"},
		{"key too short", "$argon2id$v=19$m=256,t=2,p=1$" + salt + "$c29tZXNhbHQ"},
		{"bcrypt too short", "$2b$10$short"},
		{"bcrypt bad cost", "$2a$99$XajjQvNhvvRt5GSeFk1xFeyqRrsxkhBkUiQeg0dt.wU1qD4aFDcga"},
		{"bcrypt unknown minor", "$2x$10$XajjQvNhvvRt5GSeFk1xFeyqRrsxkhBkUiQeg0dt.wU1qD4aFDcga"},
		{"scrypt", "$scrypt$ln=16,r=8,p=1$c29tZXNhbHQ$" + key},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if ok, err := VerifyPassword(tt.hash, "password"); ok || err == nil {
				t.Errorf("VerifyPassword(%q) = %v, %v; want false and an error", tt.hash, ok, err)
			}
			if err := checkHash(tt.hash); err == nil {
				t.Errorf("checkHash(%q) accepted a malformed hash", tt.hash)
			}
		})
	}
}

func TestParseUsers(t *testing.T) {
	t.Parallel()
	hash := cheapHash(t, "pw")
	tests := []struct {
		name    string
		data    string
		wantLen int
		wantErr []string // substrings of the error; nil for success
		notErr  string   // must not appear in the error
	}{
		{
			name:    "good",
			data:    `{"users": {"alice": {"password": "` + hash + `", "allow": ["db\\.internal:5432", ".*"]}, "bob@example.com": {"password": "` + refArgon2id + `"}}}`,
			wantLen: 2,
		},
		{name: "no users", data: `{}`},
		{name: "null users", data: ` {"users": null} `},
		{name: "name of 64 characters", data: `{"users": {"` + strings.Repeat("a", 64) + `": {"password": "` + hash + `"}}}`, wantLen: 1},
		{name: "name with every allowed character", data: `{"users": {"Az09._@-": {"password": "` + hash + `"}}}`, wantLen: 1},
		{
			name:    "plain-text password",
			data:    `{"users": {"alice": {"password": "hunter2"}}}`,
			wantErr: []string{"user alice", "plain-text", "burrow user add alice"},
			notErr:  "hunter2",
		},
		{
			name:    "missing password",
			data:    `{"users": {"alice": {"allow": [".*"]}}}`,
			wantErr: []string{"user alice", "missing", "burrow user add alice"},
		},
		{
			name:    "malformed hash",
			data:    `{"users": {"alice": {"password": "$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ"}}}`,
			wantErr: []string{"user alice", "malformed password hash"},
		},
		{
			name:    "bad regex",
			data:    `{"users": {"alice": {"password": "` + hash + `", "allow": ["ok", "db[:5432"]}}}`,
			wantErr: []string{"user alice", `allow pattern "db[:5432"`, "missing closing ]"},
		},
		{
			name:    "pattern escaping its anchors",
			data:    `{"users": {"alice": {"password": "` + hash + `", "allow": ["a)|(b"]}}}`,
			wantErr: []string{"user alice", `allow pattern "a)|(b"`},
		},
		{
			name:    "syntax error",
			data:    "{\n  \"users\": {\n    \"alice\": {\"password\": \"x\",}\n  }\n}",
			wantErr: []string{"line 3, column 31", "invalid character '}'"},
		},
		{
			name:    "type error",
			data:    "{\"users\": {\n\"alice\": {\"allow\": \"db:5432\"}}}",
			wantErr: []string{"line 2, column 28", "cannot unmarshal string"},
		},
		{
			name:    "column counts characters",
			data:    "{\"users\": {\"ä\": {\"password\": 1}}}",
			wantErr: []string{"line 1, column 30"},
		},
		{name: "incomplete", data: `{"users": {"alice": {`, wantErr: []string{"unexpected end of file"}},
		{name: "empty", data: " \n", wantErr: []string{"empty", "burrow user add"}},
		{name: "top-level array", data: "\n [1]", wantErr: []string{"line 2, column 2", "JSON object"}},
		{name: "top-level null", data: "null", wantErr: []string{"line 1, column 1", "JSON object"}},
		{name: "trailing data", data: "{}\n}", wantErr: []string{"line 2, column 1", "after the top-level object"}},
		{name: "unknown user field", data: `{"users": {"alice": {"password": "` + hash + `", "alow": [".*"]}}}`, wantErr: []string{`unknown field "alow"`}},
		{name: "unknown top-level field", data: `{"users": {}, "groups": {}}`, wantErr: []string{`unknown field "groups"`}},
		{
			name:    "duplicate user",
			data:    "{\"users\": {\n\"alice\": {\"password\": \"" + hash + "\"},\n\"alice\": {\"password\": \"" + hash + "\"}}}",
			wantErr: []string{"line 3, column 7", `duplicate key "alice"`},
		},
		{
			name:    "users differing in case",
			data:    `{"users": {"alice": {"password": "` + hash + `"}, "Alice": {"password": "` + hash + `"}}}`,
			wantErr: []string{`duplicate key "Alice"`},
		},
		{
			name:    "duplicate field",
			data:    `{"users": {"alice": {"allow": [], "password": "` + hash + `", "Allow": [".*"]}}}`,
			wantErr: []string{`duplicate key "Allow"`},
		},
		{name: "empty name", data: `{"users": {"": {"password": "` + hash + `"}}}`, wantErr: []string{`invalid user name ""`}},
		{name: "name with space", data: `{"users": {"al ice": {"password": "` + hash + `"}}}`, wantErr: []string{`invalid user name "al ice"`}},
		{name: "name with slash", data: `{"users": {"a/b": {"password": "` + hash + `"}}}`, wantErr: []string{`invalid user name "a/b"`}},
		{name: "name not ASCII", data: `{"users": {"ä": {"password": "` + hash + `"}}}`, wantErr: []string{`invalid user name "ä"`}},
		{name: "name with NUL", data: `{"users": {"a\u0000b": {"password": "` + hash + `"}}}`, wantErr: []string{"invalid user name"}},
		{name: "name too long", data: `{"users": {"` + strings.Repeat("a", 65) + `": {"password": "` + hash + `"}}}`, wantErr: []string{"invalid user name", "1-64"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			us, err := ParseUsers([]byte(tt.data))
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("ParseUsers: %v", err)
				}
				if us.Len() != tt.wantLen {
					t.Errorf("Len = %d, want %d", us.Len(), tt.wantLen)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseUsers succeeded, want an error containing %q", tt.wantErr)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if tt.notErr != "" && strings.Contains(err.Error(), tt.notErr) {
				t.Errorf("error %q reveals %q", err, tt.notErr)
			}
		})
	}
}

func TestLoadUsersErrorNamesFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "users.json")
	if err := os.WriteFile(path, []byte("{\n  \"users\": x\n}"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadUsers(path)
	if err == nil || !strings.Contains(err.Error(), "authfile "+path+": line 2, column 12:") {
		t.Errorf("LoadUsers error = %v, want the path, line and column", err)
	}
	_, err = LoadUsers(filepath.Join(t.TempDir(), "missing.json"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadUsers of a missing file = %v, want fs.ErrNotExist", err)
	}
}

func TestAllowed(t *testing.T) {
	t.Parallel()
	hash := cheapHash(t, "pw")
	tests := []struct {
		name   string
		allow  []string
		target string
		want   bool
	}{
		{"exact", []string{`db:5432`}, "db:5432", true},
		{"no prefix match", []string{`db:5432`}, "xdb:5432", false},
		{"no suffix match", []string{`db:5432`}, "db:54321", false},
		{"escaped dot", []string{`db\.internal:5432`}, "db.internal:5432", true},
		{"escaped dot is literal", []string{`db\.internal:5432`}, "dbxinternal:5432", false},
		{"alternation anchored on the left", []string{`a:1|b:2`}, "a:1x", false},
		{"alternation anchored on the right", []string{`a:1|b:2`}, "xb:2", false},
		{"alternation", []string{`a:1|b:2`}, "b:2", true},
		{"range", []string{`10\.0\.0\.[0-9]+:22`}, "10.0.0.17:22", true},
		{"range other port", []string{`10\.0\.0\.[0-9]+:22`}, "10.0.0.17:2222", false},
		{"ipv6", []string{`\[2001:db8::1\]:22`}, "[2001:db8::1]:22", true},
		{"reverse", []string{`R:127\.0\.0\.1:2222`}, "R:127.0.0.1:2222", true},
		{"forward pattern does not allow reverse", []string{`127\.0\.0\.1:2222`}, "R:127.0.0.1:2222", false},
		{"reverse tcp pattern does not allow reverse socks", []string{`R:127\.0\.0\.1:1080`}, bindACL("socks", "127.0.0.1:1080"), false},
		{"reverse tcp pattern does not allow reverse udp", []string{`R:127\.0\.0\.1:5353`}, bindACL("udp", "127.0.0.1:5353"), false},
		{"reverse socks", []string{`R:127\.0\.0\.1:1080/socks`}, bindACL("socks", "127.0.0.1:1080"), true},
		{"reverse socks pattern does not allow reverse tcp", []string{`R:127\.0\.0\.1:1080/socks`}, bindACL("tcp", "127.0.0.1:1080"), false},
		{"reverse tcp keeps its form", []string{`R:127\.0\.0\.1:2222`}, bindACL("tcp", "127.0.0.1:2222"), true},
		{"reverse udp keeps its form", []string{`R:127\.0\.0\.1:5353/udp`}, bindACL("udp", "127.0.0.1:5353"), true},
		{"everything allows reverse socks", []string{`.*`}, bindACL("socks", "[::1]:1080"), true},
		{"second pattern", []string{`a:1`, `b:2`}, "b:2", true},
		{"everything", []string{`.*`}, "anything:1", true},
		{"case matters", []string{`db:5432`}, "DB:5432", false},
		{"no allow", nil, "db:5432", false},
		{"no allow, empty target", nil, "", false},
		{"empty allow", []string{}, "db:5432", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			us := mustParse(t, authJSON(t, map[string]fileUser{"alice": {Password: hash, Allow: tt.allow}}))
			u := us.users["alice"]
			if got := u.Allowed(tt.target); got != tt.want {
				t.Errorf("Allowed(%q) with %q = %v, want %v", tt.target, tt.allow, got, tt.want)
			}
			err := u.CheckTarget(tt.target)
			if tt.want {
				if err != nil {
					t.Errorf("CheckTarget = %v, want nil", err)
				}
				return
			}
			var denied *DeniedError
			if !errors.As(err, &denied) || denied.User != "alice" || denied.Target != tt.target {
				t.Fatalf("CheckTarget = %#v, want a *DeniedError for alice and %q", err, tt.target)
			}
			want := "target " + tt.target + " is not allowed for user alice by the authfile's allow list"
			if err.Error() != want {
				t.Errorf("CheckTarget error = %q, want %q", err, want)
			}
		})
	}
}

// recordVerify replaces us.verify with one that records the hashes it is asked about.
func recordVerify(us *Users) *[]string {
	var (
		mu     sync.Mutex
		hashes []string
	)
	verify := us.verify
	us.verify = func(encoded, password string) (bool, error) {
		mu.Lock()
		hashes = append(hashes, encoded)
		mu.Unlock()
		return verify(encoded, password)
	}
	return &hashes
}

func TestAuthenticate(t *testing.T) {
	t.Parallel()
	hash := cheapHash(t, "right")
	us := mustParse(t, authJSON(t, map[string]fileUser{"alice": {Password: hash}, "bob": {Password: cheapHash(t, "other")}}))
	hashes := recordVerify(us)

	u, err := us.Authenticate("alice", "right")
	if err != nil || u == nil || u.Name != "alice" {
		t.Fatalf("Authenticate(alice, right) = %v, %v", u, err)
	}
	tests := []struct{ name, user, password string }{
		{"wrong password", "alice", "wrong"},
		{"unknown user", "mallory", "right"},
		{"empty user", "", ""},
		{"invalid user name", "al ice", "right"},
		{"other user's password", "bob", "right"},
	}
	var msgs []string
	for _, tt := range tests {
		*hashes = nil
		u, err := us.Authenticate(tt.user, tt.password)
		if u != nil || !errors.Is(err, ErrBadCredentials) {
			t.Errorf("%s: Authenticate = %v, %v; want nil, ErrBadCredentials", tt.name, u, err)
		}
		msgs = append(msgs, err.Error())
		// Unknown users too must cost exactly one verification, and not against a real user's hash.
		if len(*hashes) != 1 {
			t.Errorf("%s: %d hash verifications, want 1", tt.name, len(*hashes))
			continue
		}
		got := (*hashes)[0]
		if known := tt.user == "alice" || tt.user == "bob"; !known && (got == hash || hashProfile(got) != hashProfile(hash)) {
			t.Errorf("%s: verified against %q, want a dummy hash with the users' parameters", tt.name, got)
		}
	}
	if len(slices.Compact(msgs)) != 1 {
		t.Errorf("error messages differ: %q", msgs)
	}
}

func TestDummyHashFollowsTypicalUser(t *testing.T) {
	t.Parallel()
	argon := cheapArgon("x")
	tests := []struct {
		name  string
		users map[string]fileUser
		want  string // profile of the dummy hash
	}{
		{"no users", nil, "argon2id:" + fmt.Sprintf("%+v", argonParams{memory: argonMemory, time: argonTime, threads: argonThreads, keyLen: argonKeyLen})},
		{"bcrypt", map[string]fileUser{"a": {Password: cheapHash(t, "x")}}, "bcrypt:4"},
		{"argon2id", map[string]fileUser{"a": {Password: argon}}, hashProfile(argon)},
		{"majority", map[string]fileUser{"a": {Password: argon}, "b": {Password: cheapHash(t, "x")}, "c": {Password: cheapHash(t, "y")}}, "bcrypt:4"},
		{"tie goes to the first name", map[string]fileUser{"a": {Password: argon}, "b": {Password: cheapHash(t, "x")}}, hashProfile(argon)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			us := mustParse(t, authJSON(t, tt.users))
			dummy, err := us.dummy()
			if err != nil {
				t.Fatal(err)
			}
			if got := hashProfile(dummy); got != tt.want {
				t.Errorf("dummy hash profile = %q, want %q", got, tt.want)
			}
			if again, _ := us.dummy(); again != dummy {
				t.Error("dummy hash is made more than once")
			}
		})
	}
}

// TestAuthenticateTiming checks, with real argon2id, that an unknown user takes about as long as a wrong
// password. The factor is generous and the runs interleaved, so that machine load cannot make it flaky,
// while skipping the dummy verification makes unknown users thousands of times faster.
func TestAuthenticateTiming(t *testing.T) {
	if testing.Short() {
		t.Skip("computes real argon2id hashes")
	}
	t.Parallel()
	hash, err := HashPassword("right")
	if err != nil {
		t.Fatal(err)
	}
	us := mustParse(t, authJSON(t, map[string]fileUser{"alice": {Password: hash}}))
	if _, err := us.dummy(); err != nil { // made once, outside the measurement
		t.Fatal(err)
	}
	const runs = 5
	var unknown, wrong []time.Duration
	for range runs {
		start := time.Now()
		us.Authenticate("mallory", "right")
		unknown = append(unknown, time.Since(start))
		start = time.Now()
		us.Authenticate("alice", "wrong")
		wrong = append(wrong, time.Since(start))
	}
	median := func(d []time.Duration) time.Duration {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[len(d)/2]
	}
	mu, mw := median(unknown), median(wrong)
	if mu*5 < mw || mw*5 < mu {
		t.Errorf("median time for an unknown user %v, for a wrong password %v; want them within a factor of 5", mu, mw)
	}
}

func TestAuthenticateCache(t *testing.T) {
	t.Parallel()
	us := mustParse(t, authJSON(t, map[string]fileUser{"alice": {Password: cheapHash(t, "right")}}))
	hashes := recordVerify(us)
	now := time.Unix(1_000_000, 0)
	us.now = func() time.Time { return now }

	steps := []struct {
		name        string
		advance     time.Duration
		password    string
		wantErr     bool
		wantVerifys int // total so far
	}{
		{"first login verifies", 0, "right", false, 1},
		{"second login is cached", time.Minute, "right", false, 1},
		{"wrong password is not served from the cache", 0, "wrong", true, 2},
		{"wrong password is not cached", 0, "wrong", true, 3},
		{"still cached", 0, "right", false, 3},
		{"expired after the TTL", authCacheTTL, "right", false, 4},
		{"cached again", 0, "right", false, 4},
	}
	for _, s := range steps {
		now = now.Add(s.advance)
		_, err := us.Authenticate("alice", s.password)
		if (err != nil) != s.wantErr {
			t.Fatalf("%s: Authenticate error = %v, want error %v", s.name, err, s.wantErr)
		}
		if len(*hashes) != s.wantVerifys {
			t.Fatalf("%s: %d verifications so far, want %d", s.name, len(*hashes), s.wantVerifys)
		}
	}
}

func TestAuthenticateCacheChangedPassword(t *testing.T) {
	t.Parallel()
	old := mustParse(t, authJSON(t, map[string]fileUser{"alice": {Password: cheapHash(t, "old")}}))
	if _, err := old.Authenticate("alice", "old"); err != nil {
		t.Fatal(err)
	}
	// Even sharing the cache, the new hash must not be satisfied by the entry for the old one.
	changed := mustParse(t, authJSON(t, map[string]fileUser{"alice": {Password: cheapHash(t, "new")}}))
	changed.cache = old.cache
	hashes := recordVerify(changed)
	if _, err := changed.Authenticate("alice", "old"); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("old password after a change: %v, want ErrBadCredentials", err)
	}
	if len(*hashes) != 1 {
		t.Errorf("old password after a change: %d verifications, want 1 (no cache hit)", len(*hashes))
	}
	if _, err := changed.Authenticate("alice", "new"); err != nil {
		t.Errorf("new password: %v", err)
	}
}

func TestAuthenticateBoundsConcurrency(t *testing.T) {
	t.Parallel()
	us := mustParse(t, authJSON(t, map[string]fileUser{"alice": {Password: cheapHash(t, "pw")}}))
	var inFlight, peak atomic.Int32
	us.verify = func(string, string) (bool, error) {
		n := inFlight.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(2 * time.Millisecond)
		inFlight.Add(-1)
		return false, nil
	}
	limit := cap(us.sem)
	var wg sync.WaitGroup
	for range 4 * limit {
		wg.Go(func() { us.Authenticate("alice", "wrong") })
	}
	wg.Wait()
	if p := int(peak.Load()); p > limit || p < 1 {
		t.Errorf("peak concurrent verifications %d, want 1-%d", p, limit)
	}
	if limit != 2*runtime.GOMAXPROCS(0) {
		t.Errorf("semaphore of %d, want 2*GOMAXPROCS", limit)
	}
}

func TestAuthCacheBounded(t *testing.T) {
	t.Parallel()
	c := newAuthCache()
	now := time.Unix(1_000_000, 0)
	first := c.sum("u", "0", "h")
	for i := range authCacheSize + 10 {
		c.add(c.sum("u", string(rune('0'+i)), "h"), now)
	}
	if n := len(c.entries); n != authCacheSize || c.order.Len() != authCacheSize {
		t.Errorf("cache holds %d entries (%d in order), want %d", n, c.order.Len(), authCacheSize)
	}
	if c.hit(first, now) {
		t.Error("the oldest entry was not evicted")
	}
	if !c.hit(c.sum("u", string(rune('0'+authCacheSize+9)), "h"), now) {
		t.Error("the newest entry is missing")
	}
	if c.sum("u", "p", "h1") == c.sum("u", "p", "h2") {
		t.Error("sum ignores the stored hash")
	}
	if c.sum("u", "p", "h") == newAuthCache().sum("u", "p", "h") {
		t.Error("sum is not keyed")
	}
}

func TestAddUserRemoveUser(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "users.json")

	login := func(name, password string) error {
		t.Helper()
		us, err := LoadUsers(path)
		if err != nil {
			t.Fatal(err)
		}
		_, err = us.Authenticate(name, password)
		return err
	}
	checkFile := func() {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
			t.Errorf("mode %v, want 0600", fi.Mode().Perm())
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 {
			t.Errorf("directory holds %d files, want only users.json: %v", len(entries), entries)
		}
	}

	if err := AddUser(path, "alice", "pw1", []string{`db:5432`}); err != nil {
		t.Fatal(err)
	}
	checkFile()
	if err := login("alice", "pw1"); err != nil {
		t.Fatalf("alice after add: %v", err)
	}

	// The file is replaced, not rewritten in place: an open reader still sees the old contents.
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	old, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}

	if err := AddUser(path, "bob", "pw2", nil); err != nil {
		t.Fatal(err)
	}
	if err := AddUser(path, "alice", "pw3", []string{`.*`}); err != nil {
		t.Fatal(err)
	}
	checkFile()
	if stale, err := os.ReadFile(old.Name()); err != nil || string(stale) == string(before) {
		t.Errorf("file at path unchanged after AddUser (err %v)", err)
	}
	buf := make([]byte, len(before)+1)
	if n, _ := old.Read(buf); string(buf[:n]) != string(before) {
		t.Errorf("open descriptor sees %q, want the old contents %q", buf[:n], before)
	}

	us, err := LoadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	if us.Len() != 2 {
		t.Errorf("Len = %d, want 2", us.Len())
	}
	if err := login("alice", "pw1"); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("alice's old password: %v, want ErrBadCredentials", err)
	}
	if err := login("alice", "pw3"); err != nil {
		t.Errorf("alice's new password: %v", err)
	}
	if !us.users["alice"].Allowed("anything:1") || us.users["bob"].Allowed("db:5432") {
		t.Error("allow lists not stored as given")
	}

	if err := RemoveUser(path, "alice"); err != nil {
		t.Fatal(err)
	}
	checkFile()
	if err := login("alice", "pw3"); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("alice after removal: %v, want ErrBadCredentials", err)
	}
	if err := login("bob", "pw2"); err != nil {
		t.Errorf("bob after alice's removal: %v", err)
	}
	if err := RemoveUser(path, "alice"); err == nil || !strings.Contains(err.Error(), "no user alice") {
		t.Errorf("removing a missing user: %v", err)
	}
}

func TestAddUserErrors(t *testing.T) {
	t.Parallel()
	hash := cheapHash(t, "pw")
	tests := []struct {
		name     string
		existing string // file contents; "" for no file
		user     string
		password string
		allow    []string
		wantErr  string
	}{
		{name: "bad name", user: "a b", password: "pw", wantErr: `invalid user name "a b"`},
		{name: "bad pattern", user: "alice", password: "pw", allow: []string{"("}, wantErr: `allow pattern "("`},
		{name: "empty password", user: "alice", password: "", wantErr: "password must not be empty"},
		{
			name:     "clash in case",
			existing: `{"users": {"Alice": {"password": "` + hash + `"}}}`,
			user:     "alice", password: "pw", wantErr: "only in case",
		},
		{name: "broken file", existing: `{"users": {`, user: "alice", password: "pw", wantErr: "unexpected end of file"},
		{
			name:     "another user is broken",
			existing: `{"users": {"bob": {"password": "hunter2"}}}`,
			user:     "alice", password: "pw", wantErr: "user bob",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "users.json")
			if tt.existing != "" {
				if err := os.WriteFile(path, []byte(tt.existing), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := AddUser(path, tt.user, tt.password, tt.allow)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("AddUser = %v, want an error containing %q", err, tt.wantErr)
			}
			data, rerr := os.ReadFile(path)
			if tt.existing == "" && !errors.Is(rerr, fs.ErrNotExist) {
				t.Errorf("file created despite the error (%v)", rerr)
			}
			if tt.existing != "" && string(data) != tt.existing {
				t.Errorf("file changed despite the error: %q", data)
			}
		})
	}
}

func TestAddUserFixesPlainText(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "users.json")
	if err := os.WriteFile(path, []byte(`{"users": {"alice": {"password": "hunter2", "allow": ["a:1"]}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadUsers(path); err == nil {
		t.Fatal("LoadUsers accepted a plain-text password")
	}
	if err := AddUser(path, "alice", "hunter2", nil); err != nil {
		t.Fatalf("AddUser over the plain-text entry: %v", err)
	}
	if _, err := LoadUsers(path); err != nil {
		t.Fatalf("LoadUsers after the fix: %v", err)
	}
}

func TestAddUserEmptyFileAndSymlink(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	target := filepath.Join(dir, "real.json")
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "users.json")
	if err := os.Symlink(target, link); err != nil {
		t.Skipf("symlinks unavailable: %v", err)
	}
	if err := AddUser(link, "alice", "pw", nil); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("symlink replaced by a file (%v)", err)
	}
	us, err := LoadUsers(target)
	if err != nil || us.Len() != 1 {
		t.Errorf("LoadUsers of the symlink's target = %v, %v; want 1 user", us, err)
	}
}

func TestRemoveUserMissingFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "users.json")
	if err := RemoveUser(path, "alice"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("RemoveUser on a missing file = %v, want fs.ErrNotExist", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Error("RemoveUser created the file")
	}
}

package server

import (
	"bytes"
	"container/list"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// ErrBadCredentials is the only error Authenticate returns for an unknown user or a wrong password, so
// callers cannot tell the two apart.
var ErrBadCredentials = errors.New("invalid username or password")

// Argon2id parameters for new hashes: OWASP's recommendation of 19 MiB, 2 passes, 1 lane.
const (
	argonMemory  = 19 * 1024 // KiB
	argonTime    = 2
	argonThreads = 1
	argonSaltLen = 16
	argonKeyLen  = 32
)

// Bounds on argon2id parameters read from an authfile, so that a typo cannot make every login allocate
// gigabytes or run for minutes.
const (
	argonMaxMemory = 1 << 20 // KiB, 1 GiB
	argonMaxTime   = 64
	argonMinSalt   = 8
	argonMaxSalt   = 64
	argonMinKey    = 16
	argonMaxKey    = 64
)

const (
	maxUserNameLen = 64
	// authCacheSize and authCacheTTL bound the cache of successful password verifications.
	authCacheSize = 1024
	authCacheTTL  = 10 * time.Minute
)

// User is one authfile entry. It is immutable after load; callers must not modify Name.
type User struct {
	Name  string
	hash  string
	allow []*regexp.Regexp
	files *FileAccess // nil: the server's shared files root, if any
}

// Allowed reports whether one of the user's allow patterns matches the whole target, such as
// "db.internal:5432", "[2001:db8::1]:22", "10.0.0.1:53/udp", or, for reverse listeners, "R:127.0.0.1:2222",
// "R:127.0.0.1:5353/udp" and "R:127.0.0.1:1080/socks". A user without patterns may reach nothing.
func (u *User) Allowed(target string) bool {
	for _, re := range u.allow {
		if re.MatchString(target) {
			return true
		}
	}
	return false
}

// CheckTarget returns nil if the user may reach target, and a *DeniedError otherwise.
func (u *User) CheckTarget(target string) error {
	if u.Allowed(target) {
		return nil
	}
	return &DeniedError{User: u.Name, Target: target}
}

// DeniedError reports a target that the user's allow list does not match.
type DeniedError struct {
	User, Target string
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("target %s is not allowed for user %s by the authfile's allow list", e.Target, e.User)
}

// Users is a loaded authfile. It is safe for concurrent use.
type Users struct {
	users map[string]*User
	cache *authCache
	sem   chan struct{} // bounds concurrent hash verifications, each of which may take argon2's memory
	// dummy is the hash that unknown users are checked against, so they cost as much as known ones.
	dummy func() (string, error)

	verify func(encoded, password string) (bool, error) // VerifyPassword; replaced in tests
	now    func() time.Time
}

// LoadUsers reads and parses the authfile at path.
func LoadUsers(path string) (*Users, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read authfile: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && othersMayWrite(fi) {
		return nil, fmt.Errorf("authfile %s is writable by every user (mode %v), who could add themselves; chmod o-w %s", path, fi.Mode().Perm(), path)
	}
	us, err := ParseUsers(data)
	if err != nil {
		return nil, fmt.Errorf("authfile %s: %w", path, err)
	}
	return us, nil
}

// ParseUsers parses the contents of an authfile. It checks every hash's format and compiles every allow
// pattern, but computes no hash.
func ParseUsers(data []byte) (*Users, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New(`file is empty; expected {"users": {...}}, create users with "burrow user add"`)
	}
	f, err := decodeAuthFile(data)
	if err != nil {
		return nil, err
	}
	us := &Users{
		users:  make(map[string]*User, len(f.Users)),
		cache:  newAuthCache(),
		sem:    make(chan struct{}, 2*runtime.GOMAXPROCS(0)),
		verify: VerifyPassword,
		now:    time.Now,
	}
	// Sorted, so that the first bad entry reported is the same every time.
	for _, name := range slices.Sorted(maps.Keys(f.Users)) {
		u, err := newUser(name, f.Users[name])
		if err != nil {
			return nil, err
		}
		us.users[name] = u
	}
	us.dummy = sync.OnceValues(func() (string, error) {
		return hashLike(us.typicalHash(), rand.Text())
	})
	return us, nil
}

// Len returns the number of users.
func (us *Users) Len() int { return len(us.users) }

// Authenticate returns the user if the password matches, and ErrBadCredentials if the user is unknown or
// the password wrong. Both cases cost one hash verification, against a dummy hash for unknown users.
// Successful verifications are cached for a while, keyed by an HMAC of name, password and stored hash.
func (us *Users) Authenticate(name, password string) (*User, error) {
	u, known := us.users[name]
	var hash string
	if known {
		hash = u.hash
	} else {
		var err error
		if hash, err = us.dummy(); err != nil {
			return nil, fmt.Errorf("make dummy password hash: %w", err)
		}
	}
	sum := us.cache.sum(name, password, hash)
	if us.cache.hit(sum, us.now()) && known {
		return u, nil
	}
	us.sem <- struct{}{}
	ok, err := us.verify(hash, password)
	<-us.sem
	switch {
	case !known:
		return nil, ErrBadCredentials
	case err != nil:
		return nil, fmt.Errorf("check password of user %s: %w", name, err)
	case !ok:
		return nil, ErrBadCredentials
	}
	us.cache.add(sum, us.now())
	return u, nil
}

// typicalHash returns the hash whose scheme and cost parameters most users share (ties broken by user
// name), or "" if there are no users.
func (us *Users) typicalHash() string {
	counts := make(map[string]int)
	var best string
	for _, name := range slices.Sorted(maps.Keys(us.users)) {
		h := us.users[name].hash
		p := hashProfile(h)
		counts[p]++
		if counts[p] > counts[hashProfile(best)] {
			best = h
		}
	}
	return best
}

func newUser(name string, fu fileUser) (*User, error) {
	if !validUserName(name) {
		return nil, fmt.Errorf("invalid user name %q: use 1-%d characters of A-Z a-z 0-9 . _ @ -", name, maxUserNameLen)
	}
	switch {
	case fu.Password == "":
		return nil, fmt.Errorf("user %s: password hash is missing; set one with \"burrow user add %s\"", name, name)
	case hashScheme(fu.Password) == "":
		// Never echo the value: it may be a plain-text password.
		return nil, fmt.Errorf("user %s: password is not an argon2id or bcrypt hash and plain-text passwords are refused; set it with \"burrow user add %s\"", name, name)
	}
	if err := checkHash(fu.Password); err != nil {
		return nil, fmt.Errorf("user %s: malformed password hash: %w", name, err)
	}
	u := &User{Name: name, hash: fu.Password, files: fu.Files}
	if fu.Files != nil {
		if err := fu.Files.check(); err != nil {
			return nil, fmt.Errorf("user %s: %w", name, err)
		}
	}
	for _, pat := range fu.Allow {
		re, err := compileAllow(pat)
		if err != nil {
			return nil, fmt.Errorf("user %s: allow pattern %q: %w", name, pat, err)
		}
		u.allow = append(u.allow, re)
	}
	return u, nil
}

// compileAllow compiles pat anchored at both ends. pat is compiled alone first: a pattern such as
// "a)|(b" would otherwise close the anchoring group early and match "a" as a prefix.
func compileAllow(pat string) (*regexp.Regexp, error) {
	if _, err := regexp.Compile(pat); err != nil {
		return nil, err
	}
	return regexp.Compile(`^(?:` + pat + `)$`)
}

func validUserName(name string) bool {
	if len(name) == 0 || len(name) > maxUserNameLen {
		return false
	}
	for _, c := range []byte(name) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '@', c == '-':
		default:
			return false
		}
	}
	return true
}

// authFile is the JSON layout of an authfile.
type authFile struct {
	Users map[string]fileUser `json:"users"`
}

type fileUser struct {
	Password string      `json:"password"`
	Allow    []string    `json:"allow,omitempty"`
	Files    *FileAccess `json:"files,omitempty"`
}

// decodeAuthFile decodes data strictly: unknown fields, trailing data and duplicate keys are errors, and
// errors carry the line and column.
func decodeAuthFile(data []byte) (authFile, error) {
	var f authFile
	if start := len(data) - len(bytes.TrimLeft(data, " \t\r\n")); start < len(data) && data[start] != '{' {
		line, col := position(data, int64(start)+1)
		return f, fmt.Errorf(`line %d, column %d: want a JSON object {"users": {...}}`, line, col)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return f, jsonError(data, err)
	}
	end := dec.InputOffset()
	if rest := bytes.TrimLeft(data[end:], " \t\r\n"); len(rest) > 0 {
		line, col := position(data, int64(len(data)-len(rest))+1)
		return f, fmt.Errorf("line %d, column %d: unexpected data after the top-level object", line, col)
	}
	return f, checkDuplicateKeys(data)
}

// jsonError adds the line and column to the errors of encoding/json that carry an offset.
func jsonError(data []byte, err error) error {
	var (
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
		offset    int64
	)
	switch {
	case errors.As(err, &syntaxErr):
		offset = syntaxErr.Offset
	case errors.As(err, &typeErr):
		offset = typeErr.Offset
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("unexpected end of file: the JSON is incomplete")
	default:
		return err
	}
	line, col := position(data, offset)
	return fmt.Errorf("line %d, column %d: %w", line, col, err)
}

// position returns the 1-based line and column of the byte just before offset, which is where the
// offsets of encoding/json's errors point.
func position(data []byte, offset int64) (line, col int) {
	before := data[:min(max(offset-1, 0), int64(len(data)))]
	line = 1 + bytes.Count(before, []byte("\n"))
	col = 1 + utf8.RuneCount(before[bytes.LastIndexByte(before, '\n')+1:])
	return line, col
}

// checkDuplicateKeys rejects an object key that appears twice in one object, compared case-insensitively
// as encoding/json matches field names. encoding/json silently keeps the last value, which would hide an
// entry from whoever edits the first one, and users "alice" and "Alice" would be easy to confuse.
func checkDuplicateKeys(data []byte) error {
	type frame struct {
		keys    map[string]bool // nil for an array
		wantKey bool
	}
	var stack []frame
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return jsonError(data, err)
		}
		top := len(stack) - 1
		if key, ok := tok.(string); ok && top >= 0 && stack[top].wantKey {
			folded := strings.ToLower(key)
			if stack[top].keys[folded] {
				line, col := position(data, dec.InputOffset())
				return fmt.Errorf("line %d, column %d: duplicate key %q", line, col, key)
			}
			stack[top].keys[folded] = true
			stack[top].wantKey = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{keys: make(map[string]bool), wantKey: true})
			continue
		case json.Delim('['):
			stack = append(stack, frame{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:top]
		}
		// A value ended: the enclosing object, if any, expects a key next.
		if n := len(stack); n > 0 && stack[n-1].keys != nil {
			stack[n-1].wantKey = true
		}
	}
}

// authCache remembers successful verifications for authCacheTTL, evicting the oldest beyond
// authCacheSize. Entries are keyed by an HMAC under a random key, never by the password itself, and
// include the stored hash, so a changed password invalidates them.
type authCache struct {
	key     []byte
	mu      sync.Mutex
	entries map[[sha256.Size]byte]*list.Element
	order   list.List // of *authCacheEntry, oldest first
}

type authCacheEntry struct {
	sum     [sha256.Size]byte
	expires time.Time
}

func newAuthCache() *authCache {
	key := make([]byte, 32)
	rand.Read(key) // never fails since Go 1.24
	return &authCache{key: key, entries: make(map[[sha256.Size]byte]*list.Element)}
}

func (c *authCache) sum(name, password, hash string) [sha256.Size]byte {
	// The names of known users contain no NUL, and each has one hash, so an entry cannot be reached
	// with another name or password.
	m := hmac.New(sha256.New, c.key)
	io.WriteString(m, name+"\x00"+password+"\x00"+hash)
	var s [sha256.Size]byte
	m.Sum(s[:0])
	return s
}

func (c *authCache) hit(sum [sha256.Size]byte, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[sum]
	if !ok {
		return false
	}
	if now.Before(e.Value.(*authCacheEntry).expires) {
		return true
	}
	c.order.Remove(e)
	delete(c.entries, sum)
	return false
}

func (c *authCache) add(sum [sha256.Size]byte, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[sum]; ok {
		e.Value.(*authCacheEntry).expires = now.Add(authCacheTTL)
		c.order.MoveToBack(e)
		return
	}
	if c.order.Len() >= authCacheSize {
		oldest := c.order.Front()
		c.order.Remove(oldest)
		delete(c.entries, oldest.Value.(*authCacheEntry).sum)
	}
	c.entries[sum] = c.order.PushBack(&authCacheEntry{sum: sum, expires: now.Add(authCacheTTL)})
}

// HashPassword returns an argon2id hash of password in PHC format, with OWASP's parameters and a random
// 16-byte salt.
func HashPassword(password string) (string, error) {
	if password == "" {
		return "", errors.New("password must not be empty")
	}
	p := argonParams{memory: argonMemory, time: argonTime, threads: argonThreads, keyLen: argonKeyLen}
	return p.hash(password), nil
}

// VerifyPassword reports whether password matches encoded, an argon2id hash in PHC format or a bcrypt
// hash ($2a$, $2b$ or $2y$). It returns an error only for a malformed or unsupported hash.
func VerifyPassword(encoded, password string) (bool, error) {
	switch hashScheme(encoded) {
	case "argon2id":
		p, salt, key, err := parseArgon2id(encoded)
		if err != nil {
			return false, err
		}
		got := argon2.IDKey([]byte(password), salt, p.time, p.memory, p.threads, uint32(len(key)))
		return subtle.ConstantTimeCompare(got, key) == 1, nil
	case "bcrypt":
		// bcrypt compares in constant time itself.
		err := bcrypt.CompareHashAndPassword([]byte(encoded), []byte(password))
		if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			return false, nil
		}
		return err == nil, err
	}
	return false, errors.New("unsupported password hash: want argon2id ($argon2id$...) or bcrypt ($2a$, $2b$ or $2y$)")
}

func hashScheme(encoded string) string {
	switch {
	case strings.HasPrefix(encoded, "$argon2id$"):
		return "argon2id"
	case strings.HasPrefix(encoded, "$2a$"), strings.HasPrefix(encoded, "$2b$"), strings.HasPrefix(encoded, "$2y$"):
		return "bcrypt"
	}
	return ""
}

// checkHash validates the format of a hash without computing anything.
func checkHash(encoded string) error {
	if hashScheme(encoded) == "bcrypt" {
		_, err := bcrypt.Cost([]byte(encoded))
		return err
	}
	_, _, _, err := parseArgon2id(encoded)
	return err
}

// hashProfile names the scheme and cost parameters of a valid hash, "" for any other string.
func hashProfile(encoded string) string {
	if hashScheme(encoded) == "bcrypt" {
		cost, err := bcrypt.Cost([]byte(encoded))
		if err != nil {
			return ""
		}
		return "bcrypt:" + strconv.Itoa(cost)
	}
	p, _, _, err := parseArgon2id(encoded)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("argon2id:%+v", p)
}

// hashLike hashes password with the scheme and cost parameters of ref, or like HashPassword if ref is
// not a valid hash.
func hashLike(ref, password string) (string, error) {
	if hashScheme(ref) == "bcrypt" {
		if cost, err := bcrypt.Cost([]byte(ref)); err == nil {
			h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
			return string(h), err
		}
	}
	if p, _, _, err := parseArgon2id(ref); err == nil {
		return p.hash(password), nil
	}
	return HashPassword(password)
}

type argonParams struct {
	memory, time uint32
	threads      uint8
	keyLen       int
}

func (p argonParams) hash(password string) string {
	salt := make([]byte, argonSaltLen)
	rand.Read(salt) // never fails since Go 1.24
	key := argon2.IDKey([]byte(password), salt, p.time, p.memory, p.threads, uint32(p.keyLen))
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.memory, p.time, p.threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// parseArgon2id parses "$argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<key>", with the salt and
// key in unpadded standard base64, and checks that the parameters are within sane bounds.
func parseArgon2id(encoded string) (p argonParams, salt, key []byte, err error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return p, nil, nil, errors.New(`argon2id hash: want "$argon2id$v=19$m=...,t=...,p=...$<salt>$<key>"`)
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, nil, nil, fmt.Errorf("argon2id hash: unsupported version %q, want v=%d", parts[2], argon2.Version)
	}
	params := strings.Split(parts[3], ",")
	if len(params) != 3 {
		return p, nil, nil, errors.New(`argon2id hash: want parameters "m=...,t=...,p=..."`)
	}
	var vals [3]uint64
	for i, name := range []string{"m", "t", "p"} {
		v, ok := strings.CutPrefix(params[i], name+"=")
		if !ok {
			return p, nil, nil, fmt.Errorf("argon2id hash: parameter %d: want %s=<number>", i+1, name)
		}
		if vals[i], err = strconv.ParseUint(v, 10, 32); err != nil {
			return p, nil, nil, fmt.Errorf("argon2id hash: parameter %s: %w", name, err)
		}
	}
	m, t, threads := vals[0], vals[1], vals[2]
	switch {
	case threads < 1 || threads > 255:
		return p, nil, nil, fmt.Errorf("argon2id hash: p=%d out of range 1-255", threads)
	case m < 8*threads || m > argonMaxMemory:
		return p, nil, nil, fmt.Errorf("argon2id hash: m=%d out of range %d-%d KiB", m, 8*threads, argonMaxMemory)
	case t < 1 || t > argonMaxTime:
		return p, nil, nil, fmt.Errorf("argon2id hash: t=%d out of range 1-%d", t, argonMaxTime)
	}
	b64 := base64.RawStdEncoding.Strict()
	if salt, err = b64.DecodeString(parts[4]); err != nil {
		return p, nil, nil, fmt.Errorf("argon2id hash: salt: %w", err)
	}
	if key, err = b64.DecodeString(parts[5]); err != nil {
		return p, nil, nil, fmt.Errorf("argon2id hash: key: %w", err)
	}
	if len(salt) < argonMinSalt || len(salt) > argonMaxSalt {
		return p, nil, nil, fmt.Errorf("argon2id hash: salt of %d bytes, want %d-%d", len(salt), argonMinSalt, argonMaxSalt)
	}
	if len(key) < argonMinKey || len(key) > argonMaxKey {
		return p, nil, nil, fmt.Errorf("argon2id hash: key of %d bytes, want %d-%d", len(key), argonMinKey, argonMaxKey)
	}
	p = argonParams{memory: uint32(m), time: uint32(t), threads: uint8(threads), keyLen: len(key)}
	return p, salt, key, nil
}

// AddUser adds the user to the authfile at path, or replaces the user's password and allow list (keeping
// any "files" entry), creating
// the file with mode 0600 if it does not exist. Other users are kept; formatting and key order are not.
// allow holds regular expressions, each anchored at both ends; with none, the user may reach nothing.
func AddUser(path, name, password string, allow []string) error {
	if !validUserName(name) {
		return fmt.Errorf("invalid user name %q: use 1-%d characters of A-Z a-z 0-9 . _ @ -", name, maxUserNameLen)
	}
	for _, pat := range allow {
		if _, err := compileAllow(pat); err != nil {
			return fmt.Errorf("allow pattern %q: %w", pat, err)
		}
	}
	hash, err := HashPassword(password)
	if err != nil {
		return err
	}
	return rewriteAuthFile(path, true, func(f *authFile) error {
		for other := range f.Users {
			if other != name && strings.EqualFold(other, name) {
				return fmt.Errorf("user %s differs from existing user %s only in case; pick another name", name, other)
			}
		}
		if f.Users == nil {
			f.Users = make(map[string]fileUser)
		}
		// Keep the user's files entry: it is edited by hand.
		f.Users[name] = fileUser{Password: hash, Allow: allow, Files: f.Users[name].Files}
		return nil
	})
}

// RemoveUser removes the user from the authfile at path.
func RemoveUser(path, name string) error {
	return rewriteAuthFile(path, false, func(f *authFile) error {
		if _, ok := f.Users[name]; !ok {
			return fmt.Errorf("no user %s", name)
		}
		delete(f.Users, name)
		return nil
	})
}

// rewriteAuthFile applies edit to the authfile at path and replaces it atomically, if the result loads.
// A file with errors is refused rather than rewritten, except that the entry being edited may be bad:
// that is how a plain-text password gets fixed.
func rewriteAuthFile(path string, create bool, edit func(*authFile) error) error {
	// Replace the file a symlink points to, not the symlink.
	if p, err := filepath.EvalSymlinks(path); err == nil {
		path = p
	}
	unlock, err := lockFile(path)
	if err != nil {
		return fmt.Errorf("lock authfile %s: %w", path, err)
	}
	defer unlock()
	var f authFile
	data, err := os.ReadFile(path)
	switch {
	case err == nil && len(bytes.TrimSpace(data)) > 0:
		if f, err = decodeAuthFile(data); err != nil {
			return fmt.Errorf("authfile %s: %w", path, err)
		}
	case err == nil, errors.Is(err, fs.ErrNotExist) && create:
	default:
		return fmt.Errorf("read authfile: %w", err)
	}
	if err := edit(&f); err != nil {
		return fmt.Errorf("authfile %s: %w", path, err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep <, > and & in patterns readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(f); err != nil {
		return fmt.Errorf("encode authfile: %w", err)
	}
	if _, err := ParseUsers(buf.Bytes()); err != nil {
		return fmt.Errorf("authfile %s: %w", path, err)
	}
	return writeFileAtomic(path, buf.Bytes())
}

// writeFileAtomic replaces path with data, mode 0600: it writes a temporary file in the same directory,
// syncs it, renames it over path and syncs the directory, so a crash leaves the old or the new file.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write authfile: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			err = fmt.Errorf("write authfile %s: %w", path, err)
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	// The file keeps its owner: root editing a service's users file must
	// not leave it unreadable to the service.
	keepOwner(tmp, path)
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if runtime.GOOS == "windows" {
		return nil // directories cannot be synced there; the rename is durable enough
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

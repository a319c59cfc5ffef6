package server

import (
	"regexp/syntax"
	"testing"
)

func FuzzParseUsers(f *testing.F) {
	hash := cheapHash(f, "pw")
	for _, seed := range []string{
		`{"users": {"alice": {"password": "` + hash + `", "allow": ["db\\.internal:5432", "10\\.0\\.0\\.[0-9]+:22", ".*"]}}}`,
		`{"users": {"bob@example.com": {"password": "` + refArgon2id + `"}}}`,
		`{"users": {"alice": {"password": "` + refBcrypt + `", "allow": []}}}`,
		`{}`,
		`{"users": null}`,
		"",
		"null",
		"[1]",
		`{"users": {"alice": {"password": "hunter2"}}}`,
		`{"users": {"alice": {"password": "$argon2id$v=19$m=4294967295,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4"}}}`,
		`{"users": {"alice": {"password": "$2b$10$short"}}}`,
		`{"users": {"alice": {"password": "` + hash + `", "allow": ["a)|(b", "(", "\\Q"]}}}`,
		`{"users": {"alice": {"password": "` + hash + `", "allow": ["a)|(b"]}}}`,
		`{"users": {"alice": {"password": "` + hash + `"}, "Alice": {"password": "` + hash + `"}}}`,
		`{"users": {"al ice": {"password": "` + hash + `"}}}`,
		`{"users": {"alice": {"password": "` + hash + `", "alow": []}}}`,
		"{\n  \"users\": {\n    \"alice\": {\"password\": \"x\",}\n  }\n}",
		`{"users": {"alice": {"allow": "x"}}}`,
		`{"users": {`,
		"{}}",
		"\xff\xfe{}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		us, err := ParseUsers(data)
		if err != nil {
			if us != nil {
				t.Fatal("ParseUsers returned both users and an error")
			}
			return
		}
		if us.Len() != len(us.users) {
			t.Fatalf("Len = %d, want %d", us.Len(), len(us.users))
		}
		for name, u := range us.users {
			if u.Name != name || !validUserName(name) {
				t.Fatalf("user %q loaded as %q", name, u.Name)
			}
			if err := checkHash(u.hash); err != nil {
				t.Fatalf("user %s: hash accepted at load fails the check: %v", name, err)
			}
			// Every pattern is anchored at both ends of the whole expression, which a pattern such as
			// "a)|(b" would escape from.
			for _, re := range u.allow {
				tree, err := syntax.Parse(re.String(), syntax.Perl)
				if err != nil {
					t.Fatalf("user %s: pattern %q does not parse again: %v", name, re, err)
				}
				if n := len(tree.Sub); tree.Op != syntax.OpConcat || n < 2 ||
					tree.Sub[0].Op != syntax.OpBeginText || tree.Sub[n-1].Op != syntax.OpEndText {
					t.Fatalf("user %s: pattern %q is not anchored: %v", name, re, tree)
				}
			}
			u.Allowed("db.internal:5432")
		}
	})
}

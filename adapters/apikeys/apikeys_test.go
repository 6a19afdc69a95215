package apikeys_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/taskqueue/taskqueue/adapters/apikeys"
	"github.com/taskqueue/taskqueue/domain"
)

func roles(t *testing.T, s string) domain.Roles {
	t.Helper()
	r, err := domain.ParseRoles(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestGeneratedKeysAuthenticate(t *testing.T) {
	key, line, err := apikeys.Generate("billing", roles(t, "submit,read"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(key, "tq_") || len(key) != apikeys.KeyLen || len(key) < 3+43 {
		t.Fatalf("key %q", key)
	}
	if strings.Contains(line, key) {
		t.Fatal("the file line holds the key itself")
	}
	other, _, _ := apikeys.Generate("billing", roles(t, "read"))
	if other == key {
		t.Fatal("two keys alike")
	}
	set, err := apikeys.Parse(strings.NewReader("# keys\n\n" + line + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	c, ok := set.Authenticate(key)
	if !ok || c.Name != "billing" || c.Roles != roles(t, "submit,read") {
		t.Fatalf("client %+v %v", c, ok)
	}
	for _, bad := range []string{"", other, key[:len(key)-1], key + "x", "Tq_" + key[3:], strings.Repeat("a", len(key))} {
		if _, ok := set.Authenticate(bad); ok {
			t.Errorf("token %q authenticated", bad)
		}
	}
}

func TestParseErrorsNameTheLine(t *testing.T) {
	_, good, _ := apikeys.Generate("a", roles(t, "read"))
	hash := strings.Fields(good)[2]
	for _, tc := range []struct{ file, want string }{
		{good + "\nb read\n", "line 2: want NAME ROLES SHA256HEX (3 fields), got 2"},
		{"# c\nb write " + hash, "line 2: roles: \"write\" is not a role"},
		{"b read abc", "line 1: hash: want the key's SHA-256 as 64 hex digits, got 3"},
		{"b:c read " + hash, "line 1: name:"},
		{good + "\nb admin " + hash, "line 2: the same key hash is already given to \"a\""},
		{"# nothing\n", "holds no key"},
		{strings.Repeat("x", 5000), "longer than 4096 bytes"},
	} {
		_, err := apikeys.Parse(strings.NewReader(tc.file))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("file %.40q: error %v, want %q", tc.file, err, tc.want)
		}
	}
}

func TestReloadKeepsTheKeysOnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys")
	k1, l1, _ := apikeys.Generate("one", roles(t, "read"))
	k2, l2, _ := apikeys.Generate("two", roles(t, "admin"))
	if err := os.WriteFile(path, []byte(l1+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ring, err := apikeys.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(l2+"\nbroken line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := ring.Reload(); err == nil || n != 1 || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("reload of a bad file: %d keys, %v", n, err)
	}
	if c, ok := ring.Authenticate(k1); !ok || c.Name != "one" {
		t.Fatal("old key lost after a failed reload")
	}
	if err := os.WriteFile(path, []byte(l2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := ring.Reload(); err != nil || n != 1 {
		t.Fatalf("reload: %d, %v", n, err)
	}
	if _, ok := ring.Authenticate(k1); ok {
		t.Fatal("removed key still works")
	}
	if c, ok := ring.Authenticate(k2); !ok || c.Name != "two" || !c.Roles.Allows(domain.RoleAdmin) {
		t.Fatal("new key does not work")
	}
	if _, err := apikeys.Open(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("missing file opened")
	}
}

func BenchmarkAuthenticate1000Keys(b *testing.B) {
	var file strings.Builder
	var key string
	for i := 0; i < 1000; i++ {
		k, line, _ := apikeys.Generate("client", domain.Roles(domain.RoleSubmit))
		key = k
		file.WriteString(line + "\n")
	}
	set, err := apikeys.Parse(strings.NewReader(file.String()))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok := set.Authenticate(key); !ok {
			b.Fatal("not authenticated")
		}
	}
}

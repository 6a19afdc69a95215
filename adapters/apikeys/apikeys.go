// Package apikeys keeps the API keys clients authenticate with. Keys are
// configured as SHA-256 hashes, never as secrets: a file holds one key per
// line, "NAME ROLES SHA256HEX", and Generate makes a new key and its line.
package apikeys

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// Prefix starts every key Generate makes, so a leaked one is recognisable.
const Prefix = "tq_"

// keyBytes is a key's entropy: 32 random bytes.
const keyBytes = 32

// KeyLen is the length of a key: the prefix and 32 bytes in unpadded
// base64url.
var KeyLen = len(Prefix) + base64.RawURLEncoding.EncodedLen(keyBytes)

// Limits of a key file.
const (
	maxFileBytes = 16 << 20
	maxLineBytes = 4096
)

// Client is who a key belongs to and what it may do.
type Client = ports.Client

type entry struct {
	hash   [sha256.Size]byte
	client *Client // shared by every request with the key: never changed
}

// Set is a parsed key file. It is never changed once made.
type Set struct {
	byHash map[[sha256.Size]byte]entry
}

// Len returns how many keys the set holds.
func (s *Set) Len() int { return len(s.byHash) }

// Authenticate returns the client whose key token is. A token that is not
// shaped like a key (Prefix and KeyLen long) is refused before any work;
// otherwise its SHA-256 is looked up and compared in constant time, so
// neither the lookup nor the comparison tells anything about a stored
// hash but whether it matched.
func (s *Set) Authenticate(token string) (*Client, bool) {
	if len(token) != KeyLen || !strings.HasPrefix(token, Prefix) {
		return nil, false
	}
	var buf [64]byte // KeyLen fits: hashing from the stack saves an allocation
	sum := sha256.Sum256(append(buf[:0], token...))
	e, ok := s.byHash[sum]
	if !ok || subtle.ConstantTimeCompare(e.hash[:], sum[:]) != 1 {
		return nil, false
	}
	return e.client, true
}

// Parse reads a key file: one key per line, "NAME ROLES SHA256HEX"
// separated by spaces or tabs; ROLES is comma-separated (submit, read,
// admin); blank lines and lines starting with # are ignored. Several keys
// may share a name (to rotate a client's key). An error names the line.
// A file with no key is an error: it would lock every client out.
func Parse(r io.Reader) (*Set, error) {
	s := &Set{byHash: map[[sha256.Size]byte]entry{}}
	sc := bufio.NewScanner(io.LimitReader(r, maxFileBytes+1))
	sc.Buffer(make([]byte, 0, 1024), maxLineBytes)
	read := 0
	for n := 1; sc.Scan(); n++ {
		read += len(sc.Bytes()) + 1
		if read > maxFileBytes {
			return nil, fmt.Errorf("the file is larger than %d bytes", maxFileBytes)
		}
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		e, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if prev, dup := s.byHash[e.hash]; dup {
			return nil, fmt.Errorf("line %d: the same key hash is already given to %q", n, prev.client.Name)
		}
		s.byHash[e.hash] = e
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("a line is longer than %d bytes", maxLineBytes)
		}
		return nil, err
	}
	if len(s.byHash) == 0 {
		return nil, errors.New("the file holds no key: add one (taskqueue keygen prints the line), or leave --api-keys-file out to run the API open")
	}
	return s, nil
}

func parseLine(line string) (entry, error) {
	fields := strings.Fields(line)
	if len(fields) != 3 {
		return entry{}, fmt.Errorf("want NAME ROLES SHA256HEX (3 fields), got %d fields", len(fields))
	}
	if err := domain.ValidateClientName(fields[0]); err != nil {
		return entry{}, err
	}
	roles, err := domain.ParseRoles(fields[1])
	if err != nil {
		return entry{}, err
	}
	raw, err := hex.DecodeString(fields[2])
	if err != nil || len(raw) != sha256.Size {
		return entry{}, fmt.Errorf("hash: want the key's SHA-256 as 64 hex digits, got %d characters", len(fields[2]))
	}
	e := entry{client: &Client{Name: fields[0], Roles: roles}}
	copy(e.hash[:], raw)
	return e, nil
}

// Load reads and parses the key file at path.
func Load(path string) (*Set, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// Generate makes a new random key for a client and the key file line that
// admits it.
func Generate(name string, roles domain.Roles) (key, line string, err error) {
	if err := domain.ValidateClientName(name); err != nil {
		return "", "", err
	}
	if roles == 0 {
		return "", "", &domain.ValidationError{Field: "roles", Problem: "give at least one of submit, read, admin"}
	}
	b := make([]byte, keyBytes)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	key = Prefix + base64.RawURLEncoding.EncodeToString(b)
	return key, Line(name, roles, key), nil
}

// Line returns the key file line for a key.
func Line(name string, roles domain.Roles, key string) string {
	sum := sha256.Sum256([]byte(key))
	return name + " " + roles.String() + " " + hex.EncodeToString(sum[:])
}

// Keyring is the key set in use, swapped whole on Reload so requests
// never see half a file.
type Keyring struct {
	path string
	set  atomic.Pointer[Set]
}

// Open loads the key file at path.
func Open(path string) (*Keyring, error) {
	s, err := Load(path)
	if err != nil {
		return nil, err
	}
	k := &Keyring{path: path}
	k.set.Store(s)
	return k, nil
}

// Reload reads the file again. On any error the keys in use stay.
func (k *Keyring) Reload() (int, error) {
	s, err := Load(k.path)
	if err != nil {
		return k.set.Load().Len(), err
	}
	k.set.Store(s)
	return s.Len(), nil
}

// Len returns how many keys are in use.
func (k *Keyring) Len() int { return k.set.Load().Len() }

// Authenticate returns the client of token; see Set.Authenticate.
func (k *Keyring) Authenticate(token string) (*Client, bool) {
	return k.set.Load().Authenticate(token)
}

package domain

import (
	"fmt"
	"strings"
)

// Role is what a client may do. Every endpoint but the probes and the API
// description needs one.
type Role uint8

// The roles. Admin implies the others.
const (
	// RoleSubmit submits tasks.
	RoleSubmit Role = 1 << iota
	// RoleRead reads tasks, lists, stats, types and metrics.
	RoleRead
	// RoleAdmin does everything: cancel, retry, delete, pause and resume
	// too.
	RoleAdmin
)

var roleNames = []struct {
	role Role
	name string
}{{RoleSubmit, "submit"}, {RoleRead, "read"}, {RoleAdmin, "admin"}}

// Roles is a set of roles.
type Roles Role

// Allows reports whether the set grants need: admin grants every role.
func (rs Roles) Allows(need Role) bool {
	return Role(rs)&RoleAdmin != 0 || Role(rs)&need == need
}

// String lists the roles comma-separated, as ParseRoles reads them.
func (rs Roles) String() string {
	var names []string
	for _, r := range roleNames {
		if Role(rs)&r.role != 0 {
			names = append(names, r.name)
		}
	}
	return strings.Join(names, ",")
}

// String names the role.
func (r Role) String() string { return Roles(r).String() }

// ParseRoles reads a comma-separated list of roles (submit, read, admin),
// at least one, each at most once.
func ParseRoles(s string) (Roles, error) {
	var rs Roles
	if s == "" {
		return 0, &ValidationError{Field: "roles", Problem: "give at least one of submit, read, admin"}
	}
	for _, part := range strings.Split(s, ",") {
		found := false
		for _, r := range roleNames {
			if part == r.name {
				if Role(rs)&r.role != 0 {
					return 0, &ValidationError{Field: "roles", Problem: fmt.Sprintf("%q is given twice", part)}
				}
				rs |= Roles(r.role)
				found = true
			}
		}
		if !found {
			if len(part) > 32 {
				part = part[:32] + "…"
			}
			return 0, &ValidationError{Field: "roles", Problem: fmt.Sprintf("%q is not a role: want submit, read or admin", part)}
		}
	}
	return rs, nil
}

// ValidateClientName checks an API key's name: 1 to 64 letters, digits,
// '.', '_' or '-'. It is logged with what the client does.
func ValidateClientName(name string) error {
	if name == "" || len(name) > 64 {
		return &ValidationError{Field: "name", Problem: fmt.Sprintf("must be 1 to 64 characters, got %d", len(name))}
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return &ValidationError{Field: "name", Problem: fmt.Sprintf("may hold only letters, digits, '.', '_' and '-', found %q at position %d", c, i+1)}
		}
	}
	return nil
}

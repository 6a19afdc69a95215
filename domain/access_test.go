package domain_test

import (
	"testing"

	"github.com/taskqueue/taskqueue/domain"
)

func TestRoles(t *testing.T) {
	for _, tc := range []struct {
		in                  string
		submit, read, admin bool
	}{
		{"submit", true, false, false},
		{"read", false, true, false},
		{"submit,read", true, true, false},
		{"admin", true, true, true},
		{"read,admin", true, true, true},
	} {
		rs, err := domain.ParseRoles(tc.in)
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		if rs.Allows(domain.RoleSubmit) != tc.submit || rs.Allows(domain.RoleRead) != tc.read || rs.Allows(domain.RoleAdmin) != tc.admin {
			t.Errorf("%q allows submit %v read %v admin %v", tc.in, rs.Allows(domain.RoleSubmit), rs.Allows(domain.RoleRead), rs.Allows(domain.RoleAdmin))
		}
		if again, _ := domain.ParseRoles(rs.String()); again != rs {
			t.Errorf("%q: String %q does not parse back", tc.in, rs.String())
		}
	}
	for _, bad := range []string{"", "write", "read,,submit", "read,read", "Read", " read"} {
		if _, err := domain.ParseRoles(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestClientNames(t *testing.T) {
	for _, ok := range []string{"billing", "team-a.prod_1", "x"} {
		if err := domain.ValidateClientName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "has space", "a:b", "é", string(make([]byte, 65))} {
		if err := domain.ValidateClientName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

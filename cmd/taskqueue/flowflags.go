package main

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/taskqueue/taskqueue/domain"
)

// typeLimitsFlag collects repeated --type-limit TYPE=concurrency:N,rate:R/PERIOD
// values.
type typeLimitsFlag struct{ limits *map[string]domain.TypeLimits }

func (f typeLimitsFlag) String() string {
	if f.limits == nil || len(*f.limits) == 0 {
		return ""
	}
	types := make([]string, 0, len(*f.limits))
	for t := range *f.limits {
		types = append(types, t)
	}
	sort.Strings(types)
	parts := make([]string, len(types))
	for i, t := range types {
		parts[i] = t + "=" + (*f.limits)[t].String()
	}
	return strings.Join(parts, ";")
}

func (f typeLimitsFlag) Set(v string) error {
	typ, spec, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("%q is not TYPE=concurrency:N,rate:R/PERIOD", v)
	}
	if err := domain.ValidateType(typ); err != nil {
		return err
	}
	if _, dup := (*f.limits)[typ]; dup {
		return fmt.Errorf("type %q is given twice", typ)
	}
	var concurrency, rate int
	var period time.Duration
	for _, part := range strings.Split(spec, ",") {
		name, val, _ := strings.Cut(strings.TrimSpace(part), ":")
		switch name {
		case "concurrency":
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 || concurrency != 0 {
				return fmt.Errorf("%q: concurrency must be given once, as a whole number of at least 1", v)
			}
			concurrency = n
		case "rate":
			r, p, _ := strings.Cut(val, "/")
			n, err := strconv.Atoi(r)
			if err != nil || n < 1 || rate != 0 {
				return fmt.Errorf("%q: rate must be given once, as R/PERIOD with R a whole number of at least 1 (such as 100/1s)", v)
			}
			if p != "" && (p[0] < '0' || p[0] > '9') {
				p = "1" + p // 100/s means 100/1s
			}
			d, err := time.ParseDuration(p)
			if err != nil || d < time.Millisecond {
				return fmt.Errorf("%q: rate needs a PERIOD of at least 1ms after the slash (such as 100/1s or 5/1m)", v)
			}
			rate, period = n, d
		default:
			return fmt.Errorf("%q: unknown limit %q (want concurrency:N and/or rate:R/PERIOD)", v, name)
		}
	}
	limits, err := domain.NewTypeLimits(concurrency, rate, period)
	if err != nil {
		return err
	}
	if *f.limits == nil {
		*f.limits = map[string]domain.TypeLimits{}
	}
	(*f.limits)[typ] = limits
	return nil
}

// splitTypeLimits splits TASKQUEUE_TYPE_LIMITS into --type-limit values:
// entries are separated by ';', or by ',' where the next part starts a
// new TYPE=.
func splitTypeLimits(v string) []string {
	var out []string
	for _, entry := range strings.Split(v, ";") {
		for _, part := range strings.Split(entry, ",") {
			part = strings.TrimSpace(part)
			switch {
			case part == "":
			case strings.Contains(part, "=") || len(out) == 0:
				out = append(out, part)
			default:
				out[len(out)-1] += "," + part
			}
		}
	}
	return out
}

// keyLimitFlag holds --key-limit concurrency:N.
type keyLimitFlag struct{ n *int }

func (f keyLimitFlag) String() string {
	if f.n == nil || *f.n == 0 {
		return ""
	}
	return "concurrency:" + strconv.Itoa(*f.n)
}

func (f keyLimitFlag) Set(v string) error {
	num, ok := strings.CutPrefix(strings.TrimSpace(v), "concurrency:")
	n, err := strconv.Atoi(num)
	if !ok || err != nil || n < 1 {
		return fmt.Errorf("%q is not concurrency:N with N a whole number of at least 1", v)
	}
	*f.n = n
	return nil
}

// typesFlag collects repeated --accept-type TYPE values.
type typesFlag struct{ types *[]string }

func (f typesFlag) String() string {
	if f.types == nil {
		return ""
	}
	return strings.Join(*f.types, ",")
}

func (f typesFlag) Set(v string) error {
	if err := domain.ValidateType(v); err != nil {
		return err
	}
	if !slices.Contains(*f.types, v) {
		*f.types = append(*f.types, v)
	}
	return nil
}

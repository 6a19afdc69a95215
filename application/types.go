package application

import (
	"context"
	"fmt"
	"sort"

	"github.com/sirupsen/logrus"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// Types returns every type this instance runs or accepts, or that has
// tasks stored or is paused, with its limits, paused flag and counts; see
// ports.TypeManager.
func (s *Service) Types(ctx context.Context) ([]ports.TypeInfo, error) {
	stats, err := s.broker.Stats(ctx)
	if err != nil {
		return nil, fmt.Errorf("read counters: %w", err)
	}
	paused, err := s.broker.Paused(ctx)
	if err != nil {
		return nil, fmt.Errorf("read paused types: %w", err)
	}
	infos := map[string]*ports.TypeInfo{}
	info := func(name string) *ports.TypeInfo {
		if infos[name] == nil {
			infos[name] = &ports.TypeInfo{Name: name, Runs: s.runs[name], Limits: s.cfg.Limits[name], Counts: map[domain.Status]int64{}}
		}
		return infos[name]
	}
	for _, name := range s.types {
		info(name)
	}
	for name, counts := range stats.ByType {
		for st, n := range counts {
			info(name).Counts[st] = n
		}
	}
	for _, name := range paused {
		info(name).Paused = true
	}
	out := make([]ports.TypeInfo, 0, len(infos))
	for _, ti := range infos {
		out = append(out, *ti)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Pause stops new attempts of typ on every instance sharing the broker;
// see ports.TypeManager. The type must be one this instance runs or
// accepts, or one with tasks stored, so a typo is a clear 400, not a
// pause of nothing.
func (s *Service) Pause(ctx context.Context, typ string) error {
	if err := s.checkKnown(ctx, typ); err != nil {
		return err
	}
	if err := s.broker.Pause(ctx, typ); err != nil {
		return fmt.Errorf("pause type %s: %w", typ, err)
	}
	s.logWith(ctx, logrus.Fields{"type": typ}).Warn("task type paused: no new attempts start on any instance until it is resumed")
	return nil
}

// Resume lets attempts of typ start again; see ports.TypeManager.
func (s *Service) Resume(ctx context.Context, typ string) error {
	if err := domain.ValidateType(typ); err != nil {
		return err
	}
	if err := s.broker.Resume(ctx, typ); err != nil {
		return fmt.Errorf("resume type %s: %w", typ, err)
	}
	s.logWith(ctx, logrus.Fields{"type": typ}).Info("task type resumed")
	return nil
}

// checkKnown returns nil when typ is accepted here or has tasks stored.
func (s *Service) checkKnown(ctx context.Context, typ string) error {
	if err := domain.ValidateType(typ); err != nil {
		return err
	}
	if s.known[typ] {
		return nil
	}
	stats, err := s.broker.Stats(ctx)
	if err != nil {
		return fmt.Errorf("read counters: %w", err)
	}
	if _, ok := stats.ByType[typ]; ok {
		return nil
	}
	return &domain.UnknownTypeError{Type: typ, Known: s.types}
}

package domain

// Priority orders pending tasks: a higher priority runs first. The zero
// value is the lowest priority. Values outside MinPriority..MaxPriority
// cannot be made from outside this package.
type Priority struct {
	level uint8
}

// The range of priorities; PriorityLevels is how many there are.
const (
	MinPriority    = 0
	MaxPriority    = 9
	PriorityLevels = MaxPriority - MinPriority + 1
)

// ParsePriority returns the priority with the given level, or a
// *ValidationError for field "priority" when level is out of range.
func ParsePriority(level int) (Priority, error) {
	if level < MinPriority || level > MaxPriority {
		return Priority{}, invalid("priority", "must be an integer from %d to %d, got %d", MinPriority, MaxPriority, level)
	}
	return Priority{level: uint8(level)}, nil
}

// Level returns the priority as an integer in MinPriority..MaxPriority.
func (p Priority) Level() int { return int(p.level) }

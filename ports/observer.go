package ports

import "time"

// Outcome is how an attempt ended, as metrics count it.
type Outcome string

// The outcomes of an attempt.
const (
	OutcomeSucceeded  Outcome = "succeeded"   // the task succeeded
	OutcomeRetried    Outcome = "retried"     // it failed; the task will be retried
	OutcomeFailed     Outcome = "failed"      // it failed; the task failed for good
	OutcomeTimedOut   Outcome = "timed_out"   // it ran past the task timeout (retried or not)
	OutcomeCancelled  Outcome = "cancelled"   // the task was cancelled while it ran
	OutcomeHandedBack Outcome = "handed_back" // the instance stopped; the task went back unfinished
)

// Outcomes lists every outcome.
func Outcomes() []Outcome {
	return []Outcome{OutcomeSucceeded, OutcomeRetried, OutcomeFailed, OutcomeTimedOut, OutcomeCancelled, OutcomeHandedBack}
}

// Observer is told what happens, for metrics. Its methods are called on
// hot paths: they must be cheap and never block.
type Observer interface {
	// TasksSubmitted: n tasks of taskType were stored.
	TasksSubmitted(taskType string, n int)
	// AttemptStarted: an attempt of a task of taskType started after the
	// task waited that long for a worker (see Attempt.Ready).
	AttemptStarted(taskType string, waited time.Duration)
	// AttemptFinished: an attempt ended that way after running that long,
	// and its outcome was recorded.
	AttemptFinished(taskType string, outcome Outcome, took time.Duration)
	// BrokerError: a broker call (named by its method, such as "Enqueue")
	// failed for a reason of the broker's own (unreachable, full, broken),
	// not because of what was asked.
	BrokerError(operation string)
}

// NopObserver observes nothing.
type NopObserver struct{}

func (NopObserver) TasksSubmitted(string, int)                     {}
func (NopObserver) AttemptStarted(string, time.Duration)           {}
func (NopObserver) AttemptFinished(string, Outcome, time.Duration) {}
func (NopObserver) BrokerError(string)                             {}

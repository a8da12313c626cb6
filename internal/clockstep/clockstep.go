// Package clockstep notices steps of the wall clock: CLOCK_REALTIME set by
// clock_settime or settimeofday (date -s, an NTP daemon's step), adjusted by
// adjtimex's ADJ_SETOFFSET, or moved by a leap second. Slewing (NTP's
// frequency and phase corrections) is not a step: it moves CLOCK_MONOTONIC
// with the wall clock.
//
// Packet times, and so the log's times, are wall-clock times and follow a
// step; the probe ages flows by the monotonic clock, so a step costs it no
// flow, but lines around a backward step are out of time order. The
// Watcher counts steps so that the run can say so.
package clockstep

import (
	"sync/atomic"
	"time"
)

// A Step is one step of the wall clock.
type Step struct {
	At time.Time     // the wall clock just after the step
	By time.Duration // how far it moved against the monotonic clock: > 0 forward
}

// Stats are a Watcher's counts.
type Stats struct {
	Steps uint64        // steps noticed
	Last  time.Duration // the latest step's Step.By; 0 before the first
}

// counts are the Stats a Watcher publishes.
type counts struct {
	steps atomic.Uint64
	last  atomic.Int64
}

func (c *counts) add(s Step) {
	c.last.Store(int64(s.By))
	c.steps.Add(1)
}

func (c *counts) stats() Stats {
	return Stats{Steps: c.steps.Load(), Last: time.Duration(c.last.Load())}
}

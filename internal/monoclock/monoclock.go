// Package monoclock relates CLOCK_MONOTONIC, the clock of eBPF programs
// (bpf_ktime_get_ns) and of trace buffers, to Unix time.
package monoclock

import (
	"time"

	"golang.org/x/sys/unix"
)

// Now returns CLOCK_MONOTONIC in nanoseconds.
func Now() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// Offset returns Unix time minus CLOCK_MONOTONIC, in nanoseconds: add it to
// a monotonic time to get Unix time. Of a few readings it keeps the one
// taken in the shortest window, so that a preemption between the two clock
// reads does not skew it; it is good to well under a microsecond.
func Offset() int64 {
	best, window := int64(0), int64(-1)
	for range 8 {
		before := time.Now().UnixNano()
		mono := Now()
		after := time.Now().UnixNano()
		if w := after - before; window < 0 || w < window {
			best, window = (before+after)/2-mono, w
		}
	}
	return best
}

// Drift returns how far the wall clock is from offset now (Unix time minus
// CLOCK_MONOTONIC, minus offset), from one reading of each clock: a few
// tens of nanoseconds, cheap enough to call often. A preemption between
// the reads makes it large; confirm a large drift with Offset.
func Drift(offset int64) int64 {
	return time.Now().UnixNano() - Now() - offset
}

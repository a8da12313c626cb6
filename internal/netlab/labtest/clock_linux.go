package labtest

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// StepClock steps the host's wall clock by d relative to itself (adjtimex
// ADJ_SETOFFSET): a pair of opposite steps leaves it where it was. Every
// process on the host sees the step, including tests running beside the
// caller: keep d within what their delays absorb (a few milliseconds).
func StepClock(t testing.TB, d time.Duration) {
	t.Helper()
	tx := unix.Timex{Modes: unix.ADJ_SETOFFSET | unix.ADJ_NANO}
	sec, nsec := int64(d/time.Second), int64(d%time.Second)
	if nsec < 0 { // the kernel wants 0 <= nsec < 1e9
		sec, nsec = sec-1, nsec+int64(time.Second)
	}
	tx.Time = unix.Timeval{Sec: sec, Usec: nsec}
	if _, err := unix.ClockAdjtime(unix.CLOCK_REALTIME, &tx); err != nil {
		t.Fatalf("step the wall clock by %v: %v", d, err)
	}
}

package labtest

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// StepClock steps the host's wall clock by d relative to itself (adjtimex
// ADJ_SETOFFSET): a pair of opposite steps leaves it where it was. Every
// process on the host sees the step, including tests running beside the
// caller: keep d within what their delays absorb (a few milliseconds),
// and call HoldClock first.
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

// HoldClock is for a test that steps the host's wall clock or counts its
// steps: it waits until no other such test, in any package's test binary
// (go test runs packages in parallel), holds the clock, and holds it
// until the test ends. It is an exclusive flock on a file in the temp
// directory.
func HoldClock(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "siftr-probe-test-clock.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatalf("open the clock lock: %v", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("lock the clock: %v", err)
	}
	t.Cleanup(func() { f.Close() }) // closing the file releases the lock
}

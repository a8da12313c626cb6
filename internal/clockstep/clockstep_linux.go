package clockstep

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/siftr-probe/siftr-probe/internal/monoclock"
)

// A Watcher notices steps of the wall clock as they happen: the kernel
// cancels a timerfd on CLOCK_REALTIME armed with TFD_TIMER_CANCEL_ON_SET
// at every step, and the Watcher measures the step as the change of the
// wall clock's offset from the monotonic clock.
type Watcher struct {
	f      *os.File // the timerfd, on the netpoller: Close ends its read
	onStep func(Step)
	counts
	done chan struct{}
}

// Watch starts noticing steps, calling onStep (if not nil) on a goroutine
// of its own for each one, until Close.
func Watch(onStep func(Step)) (*Watcher, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_REALTIME, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("clockstep: timerfd_create: %w", err)
	}
	if err := arm(fd); err != nil {
		unix.Close(fd)
		return nil, err
	}
	w := &Watcher{f: os.NewFile(uintptr(fd), "timerfd"), onStep: onStep, done: make(chan struct{})}
	go w.run(monoclock.Offset())
	return w, nil
}

// arm sets the timer to expire far in the future (it is there to be
// cancelled), cancelled when the clock is set.
func arm(fd int) error {
	at := time.Now().Add(100 * 365 * 24 * time.Hour)
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(at.UnixNano())}
	if err := unix.TimerfdSettime(fd, unix.TFD_TIMER_ABSTIME|unix.TFD_TIMER_CANCEL_ON_SET, &spec, nil); err != nil {
		return fmt.Errorf("clockstep: timerfd_settime: %w", err)
	}
	return nil
}

func (w *Watcher) run(offset int64) {
	defer close(w.done)
	rc, err := w.f.SyscallConn()
	if err != nil {
		return
	}
	var buf [8]byte
	for {
		_, err := w.f.Read(buf[:])
		switch {
		case errors.Is(err, unix.ECANCELED):
		case err == nil:
			// Expired: the clock was set a century ahead. Measure it too.
		default:
			return // closed
		}
		// Re-arm before measuring, so a step after the measurement
		// cancels the new timer.
		var aerr error
		if err := rc.Control(func(fd uintptr) { aerr = arm(int(fd)) }); err != nil || aerr != nil {
			return
		}
		now := monoclock.Offset()
		s := Step{At: time.Now(), By: time.Duration(now - offset)}
		offset = now
		w.add(s)
		if w.onStep != nil {
			w.onStep(s)
		}
	}
}

// Stats returns the steps noticed so far. It is safe for concurrent use.
func (w *Watcher) Stats() Stats { return w.stats() }

// Close stops the Watcher and waits for its goroutine (and a call of
// onStep under way) to end. It is idempotent.
func (w *Watcher) Close() error {
	err := w.f.Close()
	<-w.done
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}

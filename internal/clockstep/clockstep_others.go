//go:build !linux

package clockstep

import "errors"

// A Watcher notices steps of the wall clock; only on Linux.
type Watcher struct{ counts }

// Watch fails: steps are noticed through a Linux timerfd.
func Watch(func(Step)) (*Watcher, error) {
	return nil, errors.New("clockstep: needs Linux (timerfd)")
}

func (w *Watcher) Stats() Stats { return w.stats() }
func (w *Watcher) Close() error { return nil }

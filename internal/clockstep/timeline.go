package clockstep

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// A Timeline orders wall-clock times across backward steps of the wall
// clock. A time's key is the time plus the size of every backward step
// the clock had made when the time was read, so keys keep the order in
// which the times were read although the times themselves go back at a
// step. Forward steps need nothing: keys jump forward with the times.
//
// Which steps came before a time is not written on it: Key finds out from
// when the time is looked at, which must be soon after it was read. Of
// the clock's frames (the spans between backward steps), it takes the
// newest in which the time is not in the future; a time read before a
// step of X and looked at more than X after the step is taken for the
// newer frame (its key X too late). The zero Timeline, and a nil one,
// have no steps: every key is the time itself.
type Timeline struct {
	mu sync.Mutex // serializes Back
	// frames holds, oldest first, the total of the backward steps at
	// the start of each frame (0 first); nil before the first step.
	frames atomic.Pointer[[]int64]
}

// maxFrames bounds the frames a Timeline remembers: a time read before
// the oldest of them is taken for it.
const maxFrames = 16

// futureSlack is how far ahead of now a time may be and still belong to
// a frame (times and now come from different clock reads).
const futureSlack = int64(time.Millisecond)

// Back records a backward step of d (> 0) made now.
func (t *Timeline) Back(d time.Duration) {
	if d <= 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var fs []int64
	if p := t.frames.Load(); p != nil {
		fs = append(fs, *p...)
	} else {
		fs = []int64{0}
	}
	fs = append(fs, fs[len(fs)-1]+int64(d))
	if len(fs) > maxFrames {
		fs = fs[len(fs)-maxFrames:]
	}
	t.frames.Store(&fs)
}

// Stepped reports whether the clock ever stepped back: until then every
// key is the time itself.
func (t *Timeline) Stepped() bool { return t != nil && t.frames.Load() != nil }

// Key returns the key of wall, a wall-clock time (ns since the Unix epoch)
// read shortly before now (the wall clock now).
func (t *Timeline) Key(wall, now int64) int64 {
	if t == nil || wall == math.MinInt64 || wall == math.MaxInt64 {
		return wall // "none yet" and "no limit" stay what they are
	}
	p := t.frames.Load()
	if p == nil {
		return wall
	}
	fs := *p
	limit := now + fs[len(fs)-1] + futureSlack
	for i := len(fs) - 1; i > 0; i-- {
		if wall+fs[i] <= limit {
			return wall + fs[i]
		}
	}
	return wall + fs[0]
}

package clockstep

import (
	"math"
	"testing"
	"time"
)

func TestTimeline(t *testing.T) {
	const s = int64(time.Second)
	var nilTL *Timeline
	if nilTL.Stepped() || nilTL.Key(5, 10) != 5 {
		t.Error("a nil Timeline has keys other than the times")
	}
	var tl Timeline
	if tl.Stepped() || tl.Key(100*s, 100*s) != 100*s {
		t.Error("a Timeline without steps has keys other than the times")
	}
	tl.Back(-time.Second) // forward steps and zero are not recorded
	tl.Back(0)
	if tl.Stepped() {
		t.Fatal("a forward step was recorded")
	}
	// At wall 100 s the clock steps back 10 s; now is 91 s (1 s later).
	tl.Back(10 * time.Second)
	for _, c := range []struct {
		name       string
		wall, want int64
	}{
		{"read after the step", 90*s + 5, 100*s + 5},
		{"read just now", 91 * s, 101 * s},
		{"read before the step (in the future of the new frame)", 99 * s, 99 * s},
		{"read before the step, in the new frame's past (ambiguous: taken for the new frame)", 90 * s, 100 * s},
	} {
		if got := tl.Key(c.wall, 91*s); got != c.want {
			t.Errorf("%s: Key(%d s) = %d, want %d", c.name, c.wall/s, got, c.want)
		}
	}
	for _, v := range []int64{math.MinInt64, math.MaxInt64} {
		if got := tl.Key(v, 91*s); got != v {
			t.Errorf("Key(%d) = %d: the sentinels must stay", v, got)
		}
	}
	// A second step back of 5 s at wall 95 s: three frames.
	tl.Back(5 * time.Second)
	if got := tl.Key(90*s+1, 91*s); got != 105*s+1 {
		t.Errorf("after two steps: Key = %d, want %d", got, 105*s+1)
	}
	if got := tl.Key(94*s, 91*s); got != 104*s {
		t.Errorf("a time of the middle frame: Key = %d, want %d", got, 104*s)
	}
	for range 2 * maxFrames {
		tl.Back(time.Millisecond)
	}
	if n := len(*tl.frames.Load()); n != maxFrames {
		t.Errorf("%d frames kept, want %d", n, maxFrames)
	}
}

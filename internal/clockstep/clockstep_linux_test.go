package clockstep

import (
	"testing"
	"time"

	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
)

// TestWatchSteps steps the host's wall clock forward and back by 2 ms (net
// change none) and checks that both steps are noticed with their sizes,
// and that a clock left alone makes none. The steps are small so that a
// probe tested beside it meanwhile sees a skew its writer's delay (5 ms)
// absorbs.
func TestWatchSteps(t *testing.T) {
	labtest.RequireRoot(t)
	labtest.HoldClock(t)
	steps := make(chan Step, 4)
	w, err := Watch(func(s Step) { steps <- s })
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	time.Sleep(50 * time.Millisecond)
	if s := w.Stats(); s.Steps != 0 {
		t.Fatalf("%d steps noticed with the clock left alone", s.Steps)
	}
	for _, d := range []time.Duration{2 * time.Millisecond, -2 * time.Millisecond} {
		labtest.StepClock(t, d)
		select {
		case s := <-steps:
			if diff := s.By - d; diff < -500*time.Microsecond || diff > 500*time.Microsecond {
				t.Errorf("a step of %v measured as %v", d, s.By)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("a step of %v was not noticed", d)
		}
	}
	if s := w.Stats(); s.Steps != 2 || s.Last > -1500*time.Microsecond || s.Last < -2500*time.Microsecond {
		t.Errorf("stats %+v, want 2 steps, the last about -2ms", s)
	}
	if err := w.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

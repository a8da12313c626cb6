package rcu

import (
	"runtime"
	"testing"
	"time"
)

// TestSynchronize checks that the kernel waits for a grace period itself
// where it can (Linux without nohz_full), and that Synchronize returns.
func TestSynchronize(t *testing.T) {
	start := time.Now()
	exact := Synchronize()
	if runtime.GOOS == "linux" && !exact {
		t.Logf("membarrier(MEMBARRIER_CMD_GLOBAL) refused here: %v; slept %v instead", synchronize(), time.Since(start))
	}
	if !exact && time.Since(start) < Fallback {
		t.Errorf("the fallback returned after %v, want at least %v", time.Since(start), Fallback)
	}
}

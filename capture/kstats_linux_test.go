//go:build linux

package capture

import (
	"testing"
	"time"

	"github.com/siftr-probe/siftr-probe/internal/netlab"
	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
)

// TestIntegrationKernelStatsPolled checks that Run folds the rings' 32-bit,
// reset-on-read PACKET_STATISTICS into its 64-bit totals by itself, without
// anyone calling Stats, so that they cannot wrap in a long quiet run.
func TestIntegrationKernelStatsPolled(t *testing.T) {
	old := kernelStatsEvery
	kernelStatsEvery = 20 * time.Millisecond
	t.Cleanup(func() { kernelStatsEvery = old })
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true})
	r := startCapture(t, lab.A.NetNS, Config{Iface: lab.A.Iface, Port: 5310, Workers: 2})
	transfer(t, lab.A.NetNS, lab.B.NetNS, lab.B.Addr4, 5310, 100<<10, 10)
	polled := func() uint64 {
		r.c.sys.mu.Lock()
		defer r.c.sys.mu.Unlock()
		var n uint64
		for _, w := range r.c.sys.workers {
			n += w.kstats[0]
		}
		return n
	}
	deadline := time.Now().Add(5 * time.Second)
	for polled() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("kernel ring statistics were not read while Run was running")
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.stop(t)
	r.checkContract(t)
	if st := r.c.Stats(); st.KernelPackets < st.Frames {
		t.Errorf("kernel packets %d < frames read %d", st.KernelPackets, st.Frames)
	}
}

//go:build linux

package capture

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// replaceRingStats swaps getRingStats for the test.
func replaceRingStats(t *testing.T, f func(fd int) (*unix.TpacketStatsV3, error)) {
	old := getRingStats
	getRingStats = f
	t.Cleanup(func() { getRingStats = old })
}

// TestIntegrationKernelStatsErrors checks that failed PACKET_STATISTICS
// reads are counted (they were ignored), and that the final drain still
// ends without the kernel's count.
func TestIntegrationKernelStatsErrors(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true})
	r := startCapture(t, lab.A.NetNS, Config{Iface: lab.A.Iface, Port: 5311, Workers: 1})
	replaceRingStats(t, func(int) (*unix.TpacketStatsV3, error) { return nil, unix.EINVAL })
	transfer(t, lab.A.NetNS, lab.B.NetNS, lab.B.Addr4, 5311, 10<<10, 10)
	r.stop(t)
	st := r.c.Stats()
	// One failed read at the drain, one for this Stats call at least.
	if st.KernelStatsErrors < 2 || st.DrainLeft != 0 {
		t.Errorf("stats %+v: want KernelStatsErrors >= 2 and no DrainLeft (unknown)", st)
	}
}

// TestIntegrationDrainLeft makes the kernel's count at the stop claim more
// frames than the ring will ever hold: the drain gives up at its deadline
// and says how many it left behind (it used to stop without a word).
func TestIntegrationDrainLeft(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true})
	r := startCapture(t, lab.A.NetNS, Config{Iface: lab.A.Iface, Port: 5312, Workers: 1})
	transfer(t, lab.A.NetNS, lab.B.NetNS, lab.B.Addr4, 5312, 10<<10, 10)
	const phantom = 1000
	replaceRingStats(t, func(fd int) (*unix.TpacketStatsV3, error) {
		ks, err := unix.GetsockoptTpacketStatsV3(fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
		if err == nil {
			ks.Packets += phantom
		}
		return ks, err
	})
	r.stop(t)
	getRingStats = func(fd int) (*unix.TpacketStatsV3, error) {
		return unix.GetsockoptTpacketStatsV3(fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	}
	st := r.c.Stats()
	if st.DrainLeft != phantom {
		t.Errorf("DrainLeft = %d, want %d (stats %+v)", st.DrainLeft, phantom, st)
	}
}

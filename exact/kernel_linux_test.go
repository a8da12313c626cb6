//go:build linux

package exact

import (
	"strings"
	"testing"
)

func TestScanHZ(t *testing.T) {
	hz, err := scanHZ(strings.NewReader("# CONFIG_HZ_100 is not set\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n"))
	if err != nil || hz != 250 {
		t.Errorf("scanHZ: %d, %v; want 250", hz, err)
	}
	if _, err := scanHZ(strings.NewReader("CONFIG_BPF=y\n")); err == nil {
		t.Error("a config without CONFIG_HZ gave no error")
	}
}

func TestNearestHZ(t *testing.T) {
	for rate, want := range map[float64]uint32{96: 100, 262: 250, 290: 300, 980: 1000, 1: 100} {
		if got := nearestHZ(rate); got != want {
			t.Errorf("nearestHZ(%v) = %d, want %d", rate, got, want)
		}
	}
}

// TestKernelHZ: the configured and the measured HZ agree on this kernel.
func TestKernelHZ(t *testing.T) {
	cfg, err := configHZ()
	if err != nil {
		t.Skipf("no kernel config to compare with: %v", err)
	}
	measured, err := measureHZ()
	if err != nil {
		t.Fatal(err)
	}
	if cfg != measured {
		t.Errorf("CONFIG_HZ %d, measured %d", cfg, measured)
	}
}

func TestLinkHeaderLen(t *testing.T) {
	for encap, want := range map[string]uint8{"ether": 14, "loopback": 14, "none": 0, "ipip": 0, "infiniband": 0xff} {
		if got := linkHeaderLen(encap); got != want {
			t.Errorf("linkHeaderLen(%q) = %d, want %d", encap, got, want)
		}
	}
}

package capture

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/siftr-probe/siftr-probe/tcp"
)

func TestConfigDefaults(t *testing.T) {
	got, err := (&Config{Iface: "eth0"}).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Iface: "eth0", BlockSize: 128 << 10, RingSize: 8 << 20, BlockTimeout: time.Millisecond}
	if got != want {
		t.Errorf("defaults:\n got %+v\nwant %+v", got, want)
	}
}

func TestConfigInvalid(t *testing.T) {
	page := os.Getpagesize()
	for _, tc := range []struct {
		name string
		cfg  *Config
		want string
	}{
		{"nil", nil, "nil config"},
		{"no interface", &Config{}, "no interface"},
		{"negative workers", &Config{Iface: "x", Workers: -1}, "workers -1 out of range 0..256"},
		{"too many workers", &Config{Iface: "x", Workers: 257}, "workers 257 out of range 0..256"},
		{"huge ring", &Config{Iface: "x", RingSize: 32 << 30}, "ring size 34359738368 too large"},
		{"block not power of two", &Config{Iface: "x", BlockSize: 3 * page}, "block size"},
		{"block below page", &Config{Iface: "x", BlockSize: page / 2}, "block size"},
		{"ring not multiple of block", &Config{Iface: "x", BlockSize: 2 * page, RingSize: 5 * page}, "ring size"},
		{"ring of one block", &Config{Iface: "x", BlockSize: 2 * page, RingSize: 2 * page}, "ring size"},
		{"timeout below 1ms", &Config{Iface: "x", BlockTimeout: time.Microsecond}, "block timeout"},
		{"timeout not whole ms", &Config{Iface: "x", BlockTimeout: 1500 * time.Microsecond}, "block timeout"},
		{"timeout too long", &Config{Iface: "x", BlockTimeout: 2 * time.Minute}, "block timeout"},
		{"negative timeout", &Config{Iface: "x", BlockTimeout: -time.Millisecond}, "block timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.cfg.withDefaults()
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "capture: ") {
				t.Errorf("withDefaults: %v, want an error about %q", err, tc.want)
			}
			if _, err := Open(tc.cfg); err == nil {
				t.Errorf("Open accepted %+v", tc.cfg)
			}
		})
	}
}

func TestDirectionString(t *testing.T) {
	if tcp.DirIn.String() != "i" || tcp.DirOut.String() != "o" {
		t.Errorf("directions %q %q", tcp.DirIn, tcp.DirOut)
	}
}

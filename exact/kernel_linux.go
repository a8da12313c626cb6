//go:build linux

package exact

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Capabilities (include/uapi/linux/capability.h).
const (
	capNetAdmin = 12
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// checkPrivileges returns an *UnavailableError naming what is missing to
// load the programs (CAP_BPF, and CAP_PERFMON for the whole-socket reads)
// and to attach them (CAP_NET_ADMIN). CAP_SYS_ADMIN stands for the first
// two, as on kernels before 5.8.
func checkPrivileges() error {
	eff, err := effectiveCaps()
	if err != nil {
		return &UnavailableError{Reason: "cannot read this process's capabilities", Err: err}
	}
	has := func(c uint) bool { return eff&(1<<c) != 0 }
	var missing []string
	if !has(capBPF) && !has(capSysAdmin) {
		missing = append(missing, "CAP_BPF")
	}
	if !has(capPerfmon) && !has(capSysAdmin) {
		missing = append(missing, "CAP_PERFMON")
	}
	if !has(capNetAdmin) {
		missing = append(missing, "CAP_NET_ADMIN")
	}
	if len(missing) > 0 {
		return &UnavailableError{Reason: "needs " + strings.Join(missing, ", ") + " (run as root, or: setcap cap_bpf,cap_perfmon,cap_net_admin,cap_net_raw+ep siftr-probe)"}
	}
	return nil
}

// effectiveCaps reads CapEff from /proc/self/status.
func effectiveCaps() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, ln := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(ln, "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff in /proc/self/status")
}

// checkKernel returns an *UnavailableError if the kernel lacks BTF, which
// the programs' CO-RE reads of struct tcp_sock need.
func checkKernel() error {
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return &UnavailableError{Reason: "the kernel has no BTF (/sys/kernel/btf/vmlinux; CONFIG_DEBUG_INFO_BTF), which reading TCP sockets in the kernel needs", Err: err}
	}
	return nil
}

// kernelHZ is the kernel's CONFIG_HZ, the unit of icsk_rto: from the
// kernel's config (/proc/config.gz, /boot/config-RELEASE) where it is
// there, else measured from the jiffies counter in /proc/schedstat against
// the monotonic clock and rounded to the nearest value the kernel allows.
func kernelHZ() (uint32, error) {
	if hz, err := configHZ(); err == nil {
		return hz, nil
	}
	return measureHZ()
}

func configHZ() (uint32, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return 0, err
	}
	release := unix.ByteSliceToString(u.Release[:])
	for _, path := range []string{"/proc/config.gz", "/boot/config-" + release} {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		var r io.Reader = f
		if strings.HasSuffix(path, ".gz") {
			zr, err := gzip.NewReader(f)
			if err != nil {
				f.Close()
				continue
			}
			r = zr
		}
		hz, err := scanHZ(r)
		f.Close()
		if err == nil {
			return hz, nil
		}
	}
	return 0, errors.New("no kernel config with CONFIG_HZ")
}

// scanHZ finds CONFIG_HZ=N in a kernel config.
func scanHZ(r io.Reader) (uint32, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if v, ok := bytes.CutPrefix(sc.Bytes(), []byte("CONFIG_HZ=")); ok {
			n, err := strconv.ParseUint(string(v), 10, 32)
			if err != nil || n == 0 {
				return 0, fmt.Errorf("bad CONFIG_HZ=%s", v)
			}
			return uint32(n), nil
		}
	}
	return 0, errors.New("no CONFIG_HZ")
}

// measureHZ counts jiffies over about 200 ms, as /proc/schedstat (its
// "timestamp" line) or /proc/timer_list (its "jiffies:" lines) show them.
func measureHZ() (uint32, error) {
	var errs []error
	for _, src := range []struct{ path, prefix string }{{"/proc/schedstat", "timestamp "}, {"/proc/timer_list", "jiffies: "}} {
		j0, t0, err := readJiffies(src.path, src.prefix)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		time.Sleep(200 * time.Millisecond)
		j1, t1, err := readJiffies(src.path, src.prefix)
		if err != nil {
			return 0, err
		}
		return nearestHZ(float64(j1-j0) / t1.Sub(t0).Seconds()), nil
	}
	return 0, fmt.Errorf("cannot tell the kernel's HZ: no kernel config, and %w", errors.Join(errs...))
}

// nearestHZ rounds a measured tick rate to the nearest CONFIG_HZ choice.
func nearestHZ(rate float64) uint32 {
	best := uint32(100)
	for _, hz := range []uint32{100, 250, 300, 1000} {
		if d, b := abs(rate-float64(hz)), abs(rate-float64(best)); d < b {
			best = hz
		}
	}
	return best
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

// readJiffies reads the jiffies counter from the first line of path that
// starts with prefix, and the time it read it.
func readJiffies(path, prefix string) (uint64, time.Time, error) {
	b, err := os.ReadFile(path)
	now := time.Now()
	if err != nil {
		return 0, now, err
	}
	for _, ln := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(ln, prefix); ok {
			j, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return j, now, err
		}
	}
	return 0, now, fmt.Errorf("no %q line in %s", prefix, path)
}

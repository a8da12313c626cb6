//go:build linux

package fidelity

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/siftr-probe/siftr-probe/internal/monoclock"
)

// tracefs is where the tracing file system is (mounted there if it is not).
const tracefs = "/sys/kernel/tracing"

var instances atomic.Uint32

// Trace is a tracefs instance recording tcp:tcp_probe for one port, with
// the monotonic clock. It needs root.
type Trace struct {
	dir string
	// Offset is Unix time minus CLOCK_MONOTONIC when the trace started:
	// Compare's offset.
	Offset int64
}

// StartTrace starts recording tcp:tcp_probe events of segments with port
// as source or destination, into a buffer of bufKB kilobytes per CPU.
func StartTrace(port uint16, bufKB int) (*Trace, error) {
	if _, err := os.Stat(filepath.Join(tracefs, "instances")); err != nil {
		if err := unix.Mount("tracefs", tracefs, "tracefs", 0, ""); err != nil {
			return nil, fmt.Errorf("fidelity: mount tracefs on %s: %w", tracefs, err)
		}
	}
	dir := filepath.Join(tracefs, "instances", fmt.Sprintf("siftr-fidelity-%d-%d", os.Getpid(), instances.Add(1)))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("fidelity: create trace instance: %w", err)
	}
	t := &Trace{dir: dir}
	for _, w := range []struct{ file, value string }{
		{"trace_clock", "mono"},
		{"options/hash-ptr", "0"}, // skbaddr as the address, not a hash of it
		{"buffer_size_kb", strconv.Itoa(bufKB)},
		{"events/tcp/tcp_probe/filter", fmt.Sprintf("sport == %d || dport == %d", port, port)},
		{"events/tcp/tcp_probe/enable", "1"},
	} {
		if err := os.WriteFile(filepath.Join(dir, w.file), []byte(w.value), 0); err != nil {
			t.Close()
			return nil, fmt.Errorf("fidelity: %s: %w", w.file, err)
		}
	}
	t.Offset = monoclock.Offset()
	return t, nil
}

// Stop stops recording and returns the events, and how many the buffer
// lost (overruns and dropped events: make it larger if they are not 0).
func (t *Trace) Stop() ([]Event, uint64, error) {
	if err := os.WriteFile(filepath.Join(t.dir, "events/tcp/tcp_probe/enable"), []byte("0"), 0); err != nil {
		return nil, 0, err
	}
	lost, err := t.lost()
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(filepath.Join(t.dir, "trace"))
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	var evs []Event
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if e, ok := parseEvent(sc.Text()); ok {
			evs = append(evs, e)
		}
	}
	return evs, lost, sc.Err()
}

// lost sums the per-CPU overrun and dropped-event counts.
func (t *Trace) lost() (uint64, error) {
	cpus, err := filepath.Glob(filepath.Join(t.dir, "per_cpu", "cpu*", "stats"))
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, p := range cpus {
		b, err := os.ReadFile(p)
		if err != nil {
			return 0, err
		}
		for _, ln := range strings.Split(string(b), "\n") {
			for _, k := range []string{"overrun: ", "dropped events: "} {
				if v, ok := strings.CutPrefix(ln, k); ok {
					x, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
					n += x
				}
			}
		}
	}
	return n, nil
}

// Close removes the instance. It is idempotent.
func (t *Trace) Close() error {
	if t.dir == "" {
		return nil
	}
	os.WriteFile(filepath.Join(t.dir, "events/tcp/tcp_probe/enable"), []byte("0"), 0)
	var err error
	for range 50 { // the kernel refuses while a reader is still open
		if err = syscall.Rmdir(t.dir); err == nil || errors.Is(err, os.ErrNotExist) {
			t.dir = ""
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("fidelity: remove trace instance %s: %w", t.dir, err)
}

//go:build linux

package capture

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/siftr-probe/siftr-probe/internal/rcu"
	"github.com/siftr-probe/siftr-probe/tcp"
)

// The run/stop/drain lifecycle of the rings, their statistics and their
// release. Set-up is in ring_linux.go, liveness checks in live_linux.go,
// the block walk in block.go.

func (s *sysCapture) run(ctx context.Context, h Handler) error {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return fmt.Errorf("capture: run on %s: %w", s.cfg.Iface, net.ErrClosed)
	case s.running:
		s.mu.Unlock()
		return fmt.Errorf("capture: run on %s: run was already called", s.cfg.Iface)
	}
	s.running = true
	s.wg.Add(len(s.workers) + 1)
	s.mu.Unlock()

	errc := make(chan error, len(s.workers))
	for _, w := range s.workers {
		go func() {
			defer s.wg.Done()
			err := w.run(h, s)
			if err != nil {
				s.stop()
			}
			errc <- err
		}()
	}
	done := make(chan struct{})
	go func() {
		defer s.wg.Done()
		// The kernel's counters are 32 bits and reset on read: fold them
		// into the workers' kstats often enough that they cannot wrap, also when
		// nobody calls Stats.
		t := time.NewTicker(kernelStatsEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				s.stop()
				return
			case <-done:
				return
			case <-t.C:
				s.mu.Lock()
				if !s.closed {
					s.readKernelStats()
				}
				s.mu.Unlock()
			}
		}
	}()
	var errs []error
	for range s.workers {
		if err := <-errc; err != nil {
			errs = append(errs, err)
		}
	}
	close(done)
	s.wg.Wait()
	return errors.Join(errs...)
}

// stop tells the workers to drain and return, waking any waiting one.
func (s *sysCapture) stop() {
	if s.stopping.CompareAndSwap(false, true) {
		// The files are closed only after every goroutine that may call
		// stop has returned. A worker that sets a later deadline after
		// this checks stopping before it waits.
		for _, w := range s.workers {
			_ = w.file.SetReadDeadline(time.Now())
		}
	}
}

// run is a worker's loop: deliver ready blocks, wait when there are none,
// and after stop deliver every frame the ring held at the stop.
func (w *worker) run(h Handler, s *sysCapture) error {
	bt := s.cfg.BlockTimeout
	safeLag := int64(2*bt + StampLag)
	idle := max(bt, idlePoll)
	errCheckIdles := max(1, int(time.Second/idle))
	idles := 0
	for !s.stopping.Load() {
		if w.ready() {
			w.down = false
			w.deliver(w.id, h)
			continue
		}
		woke, err := w.wait(s, time.Now().Add(idle), true)
		if err != nil {
			return fmt.Errorf("capture: ring %d on %s: %w", w.id, s.cfg.Iface, err)
		}
		if w.ready() || s.stopping.Load() {
			continue
		}
		if woke {
			// Woken without a retired block: the socket has an error
			// (the interface went down or away).
			if err := w.sockErr(s); err != nil {
				return err
			}
			continue
		}
		// Idle for a while. The netpoller may have dropped an error
		// signal that came while this goroutine was not waiting (it keeps
		// readiness, not errors): look for one, about once a second (a
		// host with hundreds of idle rings would otherwise make a poll(2)
		// for each at every idle wake), and while the interface is down,
		// check that it still exists.
		idles++
		if idles%errCheckIdles == 0 && w.hasError() {
			if err := w.sockErr(s); err != nil {
				return err
			}
		} else if w.down {
			if err := w.checkInterface(s); err != nil {
				return err
			}
		}
		h.Idle(w.id, time.Now().UnixNano()-safeLag)
	}

	// Drain: every frame the kernel put in the ring before now is
	// delivered once its block retires, normally within a block timeout; a
	// busy machine can delay the kernel's retire timer, hence the count.
	s.mu.Lock()
	counted := s.readRingStats(w)
	want := w.kstats[0] - w.kstats[1]
	s.mu.Unlock()
	deadline := time.Now().Add(2*bt + drainMax)
	if !counted {
		// Without the kernel's count (counted in KernelStatsErrors), drain
		// what retires within two block timeouts: the blocks every frame
		// in the ring at the stop is in, unless the machine is slow.
		want = math.MaxUint64
		deadline = time.Now().Add(2 * bt)
	}
	for w.frames.Load() < want {
		if w.ready() {
			w.deliver(w.id, h)
			continue
		}
		if !time.Now().Before(deadline) {
			if counted {
				w.drainLeft.Add(want - w.frames.Load())
			}
			return nil
		}
		if _, err := w.wait(s, deadline, false); err != nil {
			return fmt.Errorf("capture: ring %d on %s: %w", w.id, s.cfg.Iface, err)
		}
	}
	return nil
}

// wait waits until the ring's socket signals (a block retired, or a socket
// error), until deadline, or, if stoppable, until stop is called. It
// reports whether the socket signalled; a deadline or a stop is no error.
func (w *worker) wait(s *sysCapture, deadline time.Time, stoppable bool) (woke bool, err error) {
	if err := w.file.SetReadDeadline(deadline); err != nil {
		return false, err
	}
	calls := 0
	err = w.conn.Read(func(uintptr) bool {
		calls++
		return calls > 1 || w.ready() || (stoppable && s.stopping.Load())
	})
	switch {
	case err == nil:
		return calls > 1, nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return false, nil
	case errors.Is(err, os.ErrClosed):
		return false, err
	}
	// The netpoller saw only EPOLLERR ("not pollable"): report a signal,
	// so that the caller reads the socket's error. Sleep a little, so that
	// an error the socket keeps reporting cannot make a busy loop.
	time.Sleep(time.Millisecond)
	return true, nil
}

func (s *sysCapture) stats() Stats {
	var st Stats
	for _, w := range s.workers {
		st.Frames += w.frames.Load()
		st.Packets[tcp.DirIn] += w.packets[tcp.DirIn].Load()
		st.Packets[tcp.DirOut] += w.packets[tcp.DirOut].Load()
		st.NotLocal += w.notLocal.Load()
		st.Truncated += w.truncated.Load()
		st.Malformed += w.malformed.Load()
		st.Filtered += w.filtered.Load()
		st.VLAN += w.vlan.Load()
		st.DrainLeft += w.drainLeft.Load()
	}
	s.mu.Lock()
	if !s.closed {
		s.readKernelStats()
	}
	for _, w := range s.workers {
		st.KernelPackets += w.kstats[0]
		st.KernelDrops += w.kstats[1]
		st.KernelFreezes += w.kstats[2]
		st.KernelStatsErrors += w.kstatsErrors.Load()
	}
	s.mu.Unlock()
	return st
}

// readKernelStats adds the rings' PACKET_STATISTICS, which reading resets,
// to each worker's kstats. The caller holds s.mu.
func (s *sysCapture) readKernelStats() {
	for _, w := range s.workers {
		s.readRingStats(w)
	}
}

// getRingStats reads a ring's PACKET_STATISTICS; tests replace it.
var getRingStats = func(fd int) (*unix.TpacketStatsV3, error) {
	return unix.GetsockoptTpacketStatsV3(fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
}

// readRingStats adds w's PACKET_STATISTICS to its kstats and reports
// whether it could; a failed read is counted (Stats.KernelStatsErrors).
// The caller holds s.mu.
func (s *sysCapture) readRingStats(w *worker) bool {
	if w.fd < 0 {
		return false
	}
	ks, err := getRingStats(w.fd)
	if err != nil {
		w.kstatsErrors.Add(1)
		return false
	}
	w.kstats[0] += uint64(ks.Packets)
	w.kstats[1] += uint64(ks.Drops)
	w.kstats[2] += uint64(ks.Freeze_q_cnt)
	return true
}

func (s *sysCapture) close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()

	s.stop()
	s.wg.Wait()

	s.mu.Lock()
	defer s.mu.Unlock()
	s.readKernelStats()
	return s.release()
}

// release closes every ring.
func (s *sysCapture) release() error {
	var errs []error
	for _, w := range s.workers {
		errs = append(errs, w.release())
	}
	return errors.Join(errs...)
}

func (w *worker) release() error {
	var errs []error
	if w.blockReader != nil && w.ring != nil {
		errs = append(errs, os.NewSyscallError("munmap", unix.Munmap(w.ring)))
		w.ring = nil
	}
	switch {
	case w.file != nil:
		errs = append(errs, w.file.Close())
		w.file, w.fd = nil, -1
	case w.fd >= 0:
		errs = append(errs, os.NewSyscallError("close", unix.Close(w.fd)))
		w.fd = -1
	}
	return errors.Join(errs...)
}

// setPort changes the port filter of every ring; see Capture.SetPort.
func (s *sysCapture) setPort(port uint16) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, fmt.Errorf("capture: set port on %s: %w", s.cfg.Iface, net.ErrClosed)
	}
	old := s.cfg.Port
	if port == old {
		return time.Now().UnixNano(), nil
	}
	// While the kernel's filters change, user space keeps both ports.
	both := &portFilter{port: port, old: old, oldUntil: math.MaxInt64}
	for _, w := range s.workers {
		w.filter.Store(both)
	}
	err := s.attach(old, port)
	if err == nil {
		err = s.attach(port)
	}
	if err != nil {
		// Back to the old port, as far as the kernel lets us.
		s.attach(old)
		for _, w := range s.workers {
			w.filter.Store(&portFilter{port: old})
		}
		return 0, fmt.Errorf("capture: set port on %s: %w", s.cfg.Iface, err)
	}
	// Every packet the kernel filtered with the old programs is in its
	// ring once the grace period is over, stamped before now.
	rcu.Synchronize()
	t := time.Now().UnixNano()
	after := &portFilter{port: port, old: old, oldUntil: t}
	for _, w := range s.workers {
		w.filter.Store(after)
	}
	s.cfg.Port = port
	return t, nil
}

// attach replaces every ring's kernel filter with one that keeps ports.
// The caller holds s.mu.
func (s *sysCapture) attach(ports ...uint16) error {
	prog, err := filterProgram(ports...)
	if err != nil {
		return err
	}
	filter := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	fp := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	for _, w := range s.workers {
		if err := unix.SetsockoptSockFprog(w.fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fp); err != nil {
			return fmt.Errorf("ring %d: %w", w.id, os.NewSyscallError("setsockopt SO_ATTACH_FILTER", err))
		}
	}
	return nil
}

func (s *sysCapture) port() uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.Port
}

//go:build linux

package capture

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// Layout of the TPACKET_V3 ring (linux/if_packet.h). The struct mirrors are
// golang.org/x/sys/unix's; ring_linux_test.go checks them against the
// kernel's sizes and offsets.
const (
	// blockHdrOff is the offset of the tpacket_hdr_v1 inside a
	// tpacket_block_desc.
	blockHdrOff = int(unsafe.Offsetof(unix.TpacketBlockDesc{}.Hdr))
	// tpacketHdrLen is TPACKET_ALIGN(sizeof(struct tpacket3_hdr)): the
	// sockaddr_ll follows the header at this offset.
	tpacketHdrLen = (int(unsafe.Sizeof(unix.Tpacket3Hdr{})) + tpacketAlignment - 1) &^ (tpacketAlignment - 1)
	// tpacketAlignment is TPACKET_ALIGNMENT.
	tpacketAlignment = 16
	sllLen           = int(unsafe.Sizeof(unix.RawSockaddrLinklayer{}))
	// frameSize is tp_frame_size. TPACKET_V3 packs frames of variable size
	// into blocks and ignores it, but the kernel still checks it.
	frameSize = 2048
	// minFrame is a lower bound on the ring space one frame takes (header,
	// sockaddr_ll, Ethernet, IPv4 and TCP headers), used to size the
	// per-worker packet slice so that a block never outgrows it.
	minFrame = 128
	// idlePoll is the longest a worker waits in poll before calling Idle.
	idlePoll = 10 * time.Millisecond
	// drainMax bounds the final drain beyond two block timeouts.
	drainMax = time.Second
)

// kernelStatsEvery is how often Run reads the rings' PACKET_STATISTICS.
// They are 32-bit counters: at 10 million frames a second one wraps in
// about 7 minutes.
var kernelStatsEvery = 5 * time.Second

// sysCapture is the Linux body of a Capture.
type sysCapture struct {
	cfg     Config
	ifindex int
	workers []*worker

	stopping atomic.Bool
	wg       sync.WaitGroup // Run's goroutines

	mu      sync.Mutex // guards the fields below, and the fds against Close
	running bool       // Run was called (it may be called once)
	closed  bool
}

// worker is one ring and the state of the goroutine that reads it.
type worker struct {
	id        int
	fd        int
	file      *os.File // owns fd once the ring is bound: waits go through Go's netpoller
	conn      syscall.RawConn
	ring      []byte
	blockSize int
	blocks    int
	cur       int          // next block to read
	pkts      []tcp.Packet // reused for every block; len is the capacity in use
	port      uint16
	down      bool // the socket reported ENETDOWN and no block came since
	// kstats accumulates the ring's PACKET_STATISTICS: packets (drops
	// included), drops, freezes. Guarded by sysCapture.mu.
	kstats [3]uint64

	// Counters, written by the worker's goroutine once per block, read by
	// Stats. The padding keeps workers' counters off each other's cache lines.
	_         [64]byte
	frames    atomic.Uint64
	packets   [2]atomic.Uint64
	notLocal  atomic.Uint64
	truncated atomic.Uint64
	malformed atomic.Uint64
	filtered  atomic.Uint64
	_         [64]byte
}

func open(cfg *Config) (_ *sysCapture, err error) {
	if cfg.Workers == 0 {
		cfg.Workers = min(onlineCPUs(), MaxWorkers)
	}
	prog, err := filterProgram(cfg.Port)
	if err != nil {
		return nil, err
	}
	filter := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}

	s := &sysCapture{cfg: *cfg}
	defer func() {
		if err != nil {
			s.release()
		}
	}()
	fanoutID := -1
	for i := 0; i < cfg.Workers; i++ {
		w, err := s.openRing(i, filter)
		if err != nil {
			return nil, fmt.Errorf("capture: open ring on %s: %w", cfg.Iface, err)
		}
		s.workers = append(s.workers, w)
		if cfg.Workers == 1 {
			break
		}
		if fanoutID, err = joinFanout(w.fd, fanoutID); err != nil {
			return nil, fmt.Errorf("capture: open ring on %s: %w", cfg.Iface, err)
		}
	}
	return s, nil
}

// openRing creates, maps, filters and binds one ring. Its socket is created
// with protocol 0, so nothing is queued before the filter is attached and
// the socket is bound.
func (s *sysCapture) openRing(id int, filter []unix.SockFilter) (_ *worker, err error) {
	cfg := &s.cfg
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	w := &worker{
		id:        id,
		fd:        fd,
		blockSize: cfg.BlockSize,
		blocks:    cfg.RingSize / cfg.BlockSize,
		pkts:      make([]tcp.Packet, cfg.BlockSize/minFrame),
		port:      cfg.Port,
	}
	defer func() {
		if err != nil {
			w.release()
		}
	}()
	if s.ifindex == 0 {
		if s.ifindex, err = ifIndex(fd, cfg.Iface); err != nil {
			return nil, err
		}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
		return nil, os.NewSyscallError("setsockopt PACKET_VERSION", err)
	}
	req := unix.TpacketReq3{
		Block_size:     uint32(w.blockSize),
		Block_nr:       uint32(w.blocks),
		Frame_size:     frameSize,
		Frame_nr:       uint32(w.blockSize / frameSize * w.blocks),
		Retire_blk_tov: uint32(cfg.BlockTimeout / time.Millisecond),
	}
	if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return nil, os.NewSyscallError("setsockopt PACKET_RX_RING", err)
	}
	w.ring, err = unix.Mmap(fd, 0, cfg.RingSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, os.NewSyscallError("mmap", err)
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
		return nil, os.NewSyscallError("setsockopt SO_ATTACH_FILTER", err)
	}
	sa := unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: s.ifindex}
	if err := unix.Bind(fd, &sa); err != nil {
		return nil, os.NewSyscallError("bind", err)
	}
	// The worker waits for retired blocks in Go's netpoller, not in a
	// blocking poll(2): a goroutine parked there leaves its P free, so the
	// lookup and writer goroutines it wakes run at once instead of waiting
	// for the runtime to take the P back from a thread in a syscall.
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, os.NewSyscallError("fcntl O_NONBLOCK", err)
	}
	w.file = os.NewFile(uintptr(fd), "packet ring")
	if w.conn, err = w.file.SyscallConn(); err != nil {
		return nil, err
	}
	return w, nil
}

// joinFanout puts fd in a CPU fanout group. With id < 0 it creates a group
// with a kernel-chosen unique id (so that it never joins another process's
// group) and returns that id; otherwise it joins group id.
func joinFanout(fd, id int) (int, error) {
	if id < 0 {
		arg := (unix.PACKET_FANOUT_CPU | unix.PACKET_FANOUT_FLAG_UNIQUEID) << 16
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, arg); err != nil {
			return 0, os.NewSyscallError("setsockopt PACKET_FANOUT", err)
		}
		v, err := unix.GetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT)
		if err != nil {
			return 0, os.NewSyscallError("getsockopt PACKET_FANOUT", err)
		}
		return v & 0xffff, nil
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, id|unix.PACKET_FANOUT_CPU<<16); err != nil {
		return 0, os.NewSyscallError("setsockopt PACKET_FANOUT", err)
	}
	return id, nil
}

// ifIndex returns the index of the interface called name in fd's network
// namespace.
func ifIndex(fd int, name string) (int, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, fmt.Errorf("%w: %q", ErrNoInterface, name)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		if errors.Is(err, unix.ENODEV) {
			return 0, fmt.Errorf("%w: %q", ErrNoInterface, name)
		}
		return 0, os.NewSyscallError("ioctl SIOCGIFINDEX", err)
	}
	return int(ifr.Uint32()), nil
}

// ifExists reports whether an interface with index still exists in fd's
// network namespace.
func ifExists(fd, index int) bool {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return false
	}
	ifr.SetUint32(uint32(index))
	return !errors.Is(unix.IoctlIfreq(fd, unix.SIOCGIFNAME, ifr), unix.ENODEV)
}

// onlineCPUs returns the number of online CPUs (the CPU fanout maps CPU n to
// ring n mod Workers), or the CPUs this process may run on if that is not
// known.
func onlineCPUs() int {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return runtime.NumCPU()
	}
	n := 0
	for _, r := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, found := strings.Cut(r, "-")
		a, err1 := strconv.Atoi(lo)
		z, err2 := a, error(nil)
		if found {
			z, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || z < a {
			return runtime.NumCPU()
		}
		n += z - a + 1
	}
	if n < 1 {
		return runtime.NumCPU()
	}
	return n
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

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
	safeLag := int64(2*bt + time.Millisecond)
	idle := max(bt, idlePoll)
	for !s.stopping.Load() {
		if w.ready() {
			w.down = false
			w.deliver(h)
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
		// readiness, not errors): look for one, and while the interface is
		// down, check that it still exists.
		if w.hasError() {
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
	s.readKernelStats()
	want := w.kstats[0] - w.kstats[1]
	s.mu.Unlock()
	deadline := time.Now().Add(2*bt + drainMax)
	for w.frames.Load() < want {
		if w.ready() {
			w.deliver(h)
			continue
		}
		if !time.Now().Before(deadline) {
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

// sockErr reads and clears the socket's pending error. The kernel reports
// ENETDOWN when the interface goes down; that is an error only if the
// interface is gone (capture resumes when a downed interface comes up). A
// deleted interface goes down first and reports nothing more when it is
// unregistered, so while the socket is down the idle loop checks that the
// interface still exists (see run).
func (w *worker) sockErr(s *sysCapture) error {
	v, err := unix.GetsockoptInt(w.fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return fmt.Errorf("capture: ring %d on %s: %w", w.id, s.cfg.Iface, os.NewSyscallError("getsockopt SO_ERROR", err))
	}
	errno := unix.Errno(v)
	switch {
	case errno == 0:
		return nil
	case errno == unix.ENETDOWN:
		w.down = true
		return w.checkInterface(s)
	}
	return fmt.Errorf("capture: ring %d on %s: %w", w.id, s.cfg.Iface, os.NewSyscallError("packet socket", errno))
}

// hasError reports whether the socket has an error pending, without
// clearing it.
func (w *worker) hasError() bool {
	fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0 && fds[0].Revents&unix.POLLERR != 0
}

// checkInterface returns an error wrapping ErrNoInterface if the captured
// interface no longer exists.
func (w *worker) checkInterface(s *sysCapture) error {
	if ifExists(w.fd, s.ifindex) {
		return nil
	}
	return fmt.Errorf("capture: ring %d on %s: %w (interface removed)", w.id, s.cfg.Iface, ErrNoInterface)
}

// blockStatus returns a pointer to the block_status word of block i.
func (w *worker) blockStatus(i int) *uint32 {
	return (*uint32)(unsafe.Pointer(&w.ring[i*w.blockSize+blockHdrOff]))
}

// ready reports whether the next block belongs to user space.
func (w *worker) ready() bool {
	return atomic.LoadUint32(w.blockStatus(w.cur))&unix.TP_STATUS_USER != 0
}

// deliver decodes the current block, hands it back to the kernel, passes its
// packets to h and moves to the next block. The block is released before
// h.Block runs: the packets are copies, and the kernel can refill the block
// while the handler works.
func (w *worker) deliver(h Handler) {
	base := w.cur * w.blockSize
	block := w.ring[base : base+w.blockSize : base+w.blockSize]
	bh := (*unix.TpacketHdrV1)(unsafe.Pointer(&block[blockHdrOff]))
	numPkts := int(bh.Num_pkts)
	var c struct{ frames, notLocal, truncated, malformed, filtered uint64 }
	var dirs [2]uint64
	n := 0
	off := int(bh.Offset_to_first_pkt)
	for i := 0; i < numPkts; i++ {
		c.frames++
		if off < blockHdrOff || off > len(block)-tpacketHdrLen-sllLen {
			c.malformed++ // corrupt frame offset: stop walking this block
			break
		}
		th := (*unix.Tpacket3Hdr)(unsafe.Pointer(&block[off]))
		sll := (*unix.RawSockaddrLinklayer)(unsafe.Pointer(&block[off+tpacketHdrLen]))
		next := int(th.Next_offset)
		if i < numPkts-1 && next < tpacketHdrLen+sllLen {
			// A sane kernel never links frames like this; stop after this
			// frame rather than loop over the same bytes, and count the
			// rest of the block as one malformed frame.
			numPkts = i + 1
			c.frames++
			c.malformed++
		}
		var dir tcp.Direction
		switch sll.Pkttype {
		case unix.PACKET_HOST:
			dir = tcp.DirIn
		case unix.PACKET_OUTGOING:
			dir = tcp.DirOut
		default:
			c.notLocal++
			off += next
			continue
		}
		mac, nh, snap, wire := off+int(th.Mac), off+int(th.Net), int(th.Snaplen), int(th.Len)
		if mac > len(block) || snap < 0 || snap > len(block)-mac || nh < mac || nh > mac+snap {
			c.malformed++
			off += next
			continue
		}
		if n == len(w.pkts) {
			// Frames are at least minFrame bytes, so this does not happen;
			// if it did, the slice would grow once and stay grown.
			w.pkts = append(w.pkts, tcp.Packet{})
			w.pkts = w.pkts[:cap(w.pkts)]
		}
		p := &w.pkts[n]
		var err error
		switch sll.Hatype {
		case unix.ARPHRD_ETHER, unix.ARPHRD_LOOPBACK:
			err = DecodeEthernet(block[mac:mac+snap], wire, p)
		default:
			err = DecodeIP(block[nh:mac+snap], wire-(nh-mac), p)
		}
		switch {
		case err == nil && w.port != 0 && p.Src.Port() != w.port && p.Dst.Port() != w.port:
			c.filtered++
		case err == nil:
			p.Time = int64(th.Sec)*1e9 + int64(th.Nsec)
			p.Dir = dir
			dirs[dir]++
			n++
		case err == ErrTruncated:
			c.truncated++
		case err == ErrMalformed:
			c.malformed++
		default:
			c.filtered++
		}
		off += next
	}
	atomic.StoreUint32(w.blockStatus(w.cur), unix.TP_STATUS_KERNEL)
	w.cur++
	if w.cur == w.blocks {
		w.cur = 0
	}
	w.frames.Add(c.frames)
	w.packets[tcp.DirIn].Add(dirs[tcp.DirIn])
	w.packets[tcp.DirOut].Add(dirs[tcp.DirOut])
	if c.notLocal|c.truncated|c.malformed|c.filtered != 0 {
		w.notLocal.Add(c.notLocal)
		w.truncated.Add(c.truncated)
		w.malformed.Add(c.malformed)
		w.filtered.Add(c.filtered)
	}
	h.Block(w.id, w.pkts[:n])
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
	}
	s.mu.Lock()
	if !s.closed {
		s.readKernelStats()
	}
	for _, w := range s.workers {
		st.KernelPackets += w.kstats[0]
		st.KernelDrops += w.kstats[1]
		st.KernelFreezes += w.kstats[2]
	}
	s.mu.Unlock()
	return st
}

// readKernelStats adds the rings' PACKET_STATISTICS, which reading resets,
// to each worker's kstats. The caller holds s.mu.
func (s *sysCapture) readKernelStats() {
	for _, w := range s.workers {
		if w.fd < 0 {
			continue
		}
		ks, err := unix.GetsockoptTpacketStatsV3(w.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
		if err != nil {
			continue
		}
		w.kstats[0] += uint64(ks.Packets)
		w.kstats[1] += uint64(ks.Drops)
		w.kstats[2] += uint64(ks.Freeze_q_cnt)
	}
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
	if w.ring != nil {
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

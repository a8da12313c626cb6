//go:build linux

package capture

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// frameSize is tp_frame_size. TPACKET_V3 packs frames of variable size
	// into blocks and ignores it, but the kernel still checks it.
	frameSize = 2048
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
	vlans   map[uint16]bool // VLAN ids of the interface's VLAN devices, at Open

	stopping atomic.Bool
	wg       sync.WaitGroup // Run's goroutines

	mu      sync.Mutex // guards the fields below, and the fds against Close
	running bool       // Run was called (it may be called once)
	closed  bool
}

// worker is one ring and the state of the goroutine that reads it.
type worker struct {
	*blockReader
	id   int
	fd   int
	file *os.File // owns fd once the ring is bound: waits go through Go's netpoller
	conn syscall.RawConn
	down bool // the socket reported ENETDOWN and no block came since
	// kstats accumulates the ring's PACKET_STATISTICS: packets (drops
	// included), drops, freezes. Guarded by sysCapture.mu.
	kstats [3]uint64
	// Written by the worker's goroutine (drainLeft) or under sysCapture.mu
	// (kstatsErrors); read by Stats.
	kstatsErrors atomic.Uint64
	drainLeft    atomic.Uint64
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

	s := &sysCapture{cfg: *cfg, vlans: vlanIDs(cfg.Iface)}
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
	w := &worker{id: id, fd: fd}
	blocks := cfg.RingSize / cfg.BlockSize
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
		Block_size:     uint32(cfg.BlockSize),
		Block_nr:       uint32(blocks),
		Frame_size:     frameSize,
		Frame_nr:       uint32(cfg.BlockSize / frameSize * blocks),
		Retire_blk_tov: uint32(cfg.BlockTimeout / time.Millisecond),
	}
	if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return nil, os.NewSyscallError("setsockopt PACKET_RX_RING", err)
	}
	ring, err := unix.Mmap(fd, 0, cfg.RingSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, os.NewSyscallError("mmap", err)
	}
	w.blockReader = newBlockReader(ring, cfg.BlockSize, cfg.Port)
	w.vlans = s.vlans
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

// vlanIDs returns the ids of the VLAN devices on top of iface, in the
// calling thread's network namespace, from /proc/net/vlan/config (which
// exists once the 8021q module is loaded; without it there are none).
// Devices made later are not seen: their frames count as Stats.VLAN.
func vlanIDs(iface string) map[uint16]bool {
	b, err := os.ReadFile("/proc/thread-self/net/vlan/config")
	if err != nil {
		return nil
	}
	return parseVLANConfig(string(b), iface)
}

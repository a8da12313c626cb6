package capture

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// ErrNoInterface is wrapped by the error Open returns when Config.Iface
// names no interface in the calling thread's network namespace.
var ErrNoInterface = errors.New("no such network interface")

// Defaults and limits of Config.
const (
	DefaultBlockSize    = 128 << 10
	DefaultRingSize     = 8 << 20
	DefaultBlockTimeout = time.Millisecond
	// MaxBlockTimeout bounds Config.BlockTimeout.
	MaxBlockTimeout = time.Minute
	// MaxWorkers bounds Config.Workers: a fanout group takes at most 256
	// sockets (the kernel's default max_num_members).
	MaxWorkers = 256
	// MaxBlockSize and MaxRingSize bound Config.BlockSize and RingSize.
	MaxBlockSize = 1 << 30
	MaxRingSize  = 16 << 30
)

// Config configures Open. A nil *Config is invalid: Iface is required.
type Config struct {
	// Iface is the interface to capture on (required), in the network
	// namespace of the thread that calls Open.
	Iface string
	// Port keeps only TCP segments with this source or destination port;
	// 0 keeps all TCP.
	Port uint16
	// Workers is the number of rings, each read by its own goroutine and
	// fed by a CPU fanout group (packets of CPU n go to ring n mod Workers).
	// 0 means one per online CPU (at most MaxWorkers). At most MaxWorkers.
	Workers int
	// BlockSize is the size in bytes of one ring block, the unit handed to
	// Handler.Block. 0 means DefaultBlockSize. It must be a power of two and
	// a multiple of the page size.
	BlockSize int
	// RingSize is the size in bytes of each ring. 0 means DefaultRingSize.
	// It must be a multiple of BlockSize and at least two blocks.
	RingSize int
	// BlockTimeout is how long the kernel keeps a block with at least one
	// packet open before handing it to user space (retire_blk_tov). 0 means
	// DefaultBlockTimeout. It must be a whole number of milliseconds, at
	// least 1 ms and at most MaxBlockTimeout.
	BlockTimeout time.Duration
}

// withDefaults validates cfg and returns a copy with the defaults filled in
// (Workers stays 0 for "all online CPUs").
func (cfg *Config) withDefaults() (Config, error) {
	if cfg == nil {
		return Config{}, errors.New("capture: nil config")
	}
	c := *cfg
	if c.Iface == "" {
		return c, errors.New("capture: config: no interface")
	}
	if c.Workers < 0 || c.Workers > MaxWorkers {
		return c, fmt.Errorf("capture: config: workers %d out of range 0..%d", c.Workers, MaxWorkers)
	}
	if c.BlockSize == 0 {
		c.BlockSize = DefaultBlockSize
	}
	if c.RingSize == 0 {
		c.RingSize = DefaultRingSize
	}
	if c.BlockTimeout == 0 {
		c.BlockTimeout = DefaultBlockTimeout
	}
	page := os.Getpagesize()
	if c.BlockSize < page || c.BlockSize&(c.BlockSize-1) != 0 || c.BlockSize%page != 0 {
		return c, fmt.Errorf("capture: config: block size %d is not a power of two and a multiple of the page size %d", c.BlockSize, page)
	}
	if c.BlockSize > MaxBlockSize {
		return c, fmt.Errorf("capture: config: block size %d too large (at most %d)", c.BlockSize, MaxBlockSize)
	}
	if c.RingSize > MaxRingSize {
		return c, fmt.Errorf("capture: config: ring size %d too large (at most %d)", c.RingSize, MaxRingSize)
	}
	if c.RingSize < 2*c.BlockSize || c.RingSize%c.BlockSize != 0 {
		return c, fmt.Errorf("capture: config: ring size %d is not a multiple of at least two blocks of %d bytes", c.RingSize, c.BlockSize)
	}
	if c.RingSize/c.BlockSize > 1<<20 {
		return c, fmt.Errorf("capture: config: ring size %d has too many blocks", c.RingSize)
	}
	if c.BlockTimeout < time.Millisecond || c.BlockTimeout%time.Millisecond != 0 || c.BlockTimeout > MaxBlockTimeout {
		return c, fmt.Errorf("capture: config: block timeout %v is not a whole number of milliseconds in [1ms, %v]", c.BlockTimeout, MaxBlockTimeout)
	}
	return c, nil
}

// Handler receives decoded packets. Both methods are called from the
// worker's own goroutine, never concurrently for the same worker; different
// workers call them concurrently.
type Handler interface {
	// Block is called once per retired ring block that held at least one
	// frame, with its decoded TCP packets (possibly empty if every frame was
	// skipped), in ring order. pkts is valid only during the call: the
	// worker reuses it. The packets are copies: the ring block has already
	// been handed back to the kernel, which may refill it while Block runs.
	// safe is a time (ns since the Unix epoch) such that every packet this
	// worker delivers later has Time >= safe: the newest packet time of
	// the block less StampLag (0 for a block without packets).
	Block(worker int, pkts []tcp.Packet, safe int64)
	// Idle is called when a poll of the worker's ring found nothing ready,
	// at least every 10 ms (or every BlockTimeout, if longer) while the
	// ring is idle. safe is as Block's: the time the empty poll returned,
	// less two block timeouts (a frame's block is retired at most two
	// block timeouts after the frame was written) and StampLag.
	Idle(worker int, safe int64)
}

// StampLag bounds how long before the kernel writes a frame into a ring
// the frame's timestamp can have been taken: the one assumption both
// watermarks of a Handler rest on. The kernel stamps a packet when it
// enters the stack (or in the packet socket's own hook); RPS steering and
// a CPU's backlog can hold it before it reaches the ring, so a ring's
// frames are in time order only to within this.
const StampLag = time.Millisecond

// Stats counts what the rings saw. Frames = Packets[0] + Packets[1] +
// NotLocal + Truncated + Malformed + Filtered + VLAN, once Run has returned.
type Stats struct {
	// Frames is the number of frames read from the rings.
	Frames uint64
	// Packets is the number of packets delivered to the handler, indexed by
	// Direction (DirIn = 0, DirOut = 1).
	Packets [2]uint64
	// NotLocal counts frames whose sll_pkttype is neither PACKET_HOST nor
	// PACKET_OUTGOING (forwarded, broadcast, sniffed: no local socket).
	NotLocal uint64
	// Truncated counts frames cut before the end of the TCP header.
	Truncated uint64
	// Malformed counts frames the IP stack drops before TCP: bad IP/TCP
	// header fields, a bad IPv4 header checksum, an IP length beyond the
	// frame, more than two VLAN tags in the frame; and non-first fragments.
	Malformed uint64
	// VLAN counts received frames tagged for a VLAN that is not this
	// interface's own traffic: a tag id none of the interface's VLAN
	// devices has (at Open), which the stack drops, or a tag still in the
	// frame (stacked VLANs). Capture on the VLAN device to log its traffic.
	VLAN uint64
	// Filtered counts frames that passed the kernel filter but, fully
	// decoded, are not TCP on Config.Port (IPv6 extension chains, VLAN-tagged
	// frames the filter could not look into).
	Filtered uint64
	// KernelPackets, KernelDrops and KernelFreezes are the rings'
	// PACKET_STATISTICS (tpacket_stats_v3), summed over rings and over
	// time: tp_packets (frames that passed the filter, including the
	// dropped ones), tp_drops (frames lost because the ring was full) and
	// tp_freeze_q_cnt (times a ring ran out of free blocks).
	KernelPackets, KernelDrops, KernelFreezes uint64
	// KernelStatsErrors counts failed reads of PACKET_STATISTICS: the
	// kernel counts above miss what those reads would have added, and a
	// final drain without the count waits two block timeouts instead.
	KernelStatsErrors uint64
	// DrainLeft counts frames the kernel had put in the rings when Run was
	// stopped that the final drain gave up waiting for (their blocks did
	// not retire within two block timeouts and a second); they were not
	// delivered.
	DrainLeft uint64
}

// Capture is a set of AF_PACKET TPACKET_V3 rings on one interface, joined in
// a CPU fanout group, with a BPF filter for TCP. Open creates one; Run reads
// it; Close releases it. Workers and Stats are safe for concurrent use.
type Capture struct {
	cfg Config
	sys *sysCapture
}

// Open creates the rings described by cfg, in the network namespace of the
// calling thread (wrap it in netns.Do to capture in another namespace), and
// starts capturing into them: frames that arrive before Run are kept until
// the rings fill. It needs CAP_NET_RAW; without it the error satisfies
// errors.Is(err, os.ErrPermission). An unknown interface gives an error
// wrapping ErrNoInterface.
func Open(cfg *Config) (*Capture, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	sys, err := open(&c)
	if err != nil {
		return nil, err
	}
	return &Capture{cfg: c, sys: sys}, nil
}

// Workers returns the number of rings, and so of worker goroutines Run
// starts; worker indexes passed to the Handler are in [0, Workers()).
func (c *Capture) Workers() int { return c.cfg.Workers }

// IfIndex returns the index of the captured interface, in the capture's
// network namespace.
func (c *Capture) IfIndex() int { return c.sys.ifindex }

// Run reads the rings, one goroutine per ring, and calls h until ctx is done
// or Close is called. It then keeps delivering the blocks the kernel retires
// until every frame the rings held at the stop has reached h (normally
// within a block timeout; at most two block timeouts and a second), and
// returns nil. It returns an error if a ring fails, if Run was
// already called, or if the capture is closed. Run may be called only once.
func (c *Capture) Run(ctx context.Context, h Handler) error {
	return c.sys.run(ctx, h)
}

// SetPort changes the port filter (Config.Port) while the rings capture,
// and returns the time of the change (ns since the Unix epoch, the clock of
// Packet.Time): every frame of the old port that reaches the handler was
// captured before it, and every frame of the new port captured from the
// start of the call on reaches the handler.
//
// It replaces each ring's kernel filter twice (SO_ATTACH_FILTER swaps a
// socket's filter atomically): first with one that keeps both ports, on
// every ring, then with one that keeps the new port only. It then waits
// until no packet the kernel was filtering with the old programs is left
// (package rcu), and reads the clock. The old port's frames still in the
// rings, all captured before that time, are delivered; those the kernel's
// filter leaves to user space (VLAN tags in the frame) are checked against
// the same time and counted as Filtered after it. It is safe for
// concurrent use with Run and Stats; calls are serialized.
func (c *Capture) SetPort(port uint16) (int64, error) { return c.sys.setPort(port) }

// Port returns the port filter in force.
func (c *Capture) Port() uint16 { return c.sys.port() }

// Stats returns the counters so far. It is safe for concurrent use, also
// during Run and after Close (which keeps the final values).
func (c *Capture) Stats() Stats { return c.sys.stats() }

// Close stops Run (waking blocked polls), waits for its goroutines to
// finish, and releases the rings. It is idempotent and safe for concurrent
// use.
func (c *Capture) Close() error { return c.sys.close() }

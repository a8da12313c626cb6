//go:build linux

package diag

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/siftr-probe/siftr-probe/internal/netns"
	"github.com/siftr-probe/siftr-probe/tcp"
)

const (
	// recvBufSize is the buffer for one reply datagram. A reply is about
	// 600 bytes (inet_diag_msg, tcp_info, congestion name, skmeminfo and a
	// few small attributes); a longer one (ULP info) is read truncated and
	// parsed as far as it goes.
	recvBufSize = 2048
	// rcvbufPerReply is the receive buffer Open reserves per reply of a
	// batch. The kernel doubles the value set and charges each reply its
	// skb's true size (about 2 KiB), so this leaves room for a batch of
	// replies and stale messages from an earlier, interrupted call.
	rcvbufPerReply = 4096
)

// mmsghdr mirrors struct mmsghdr; Go pads it to its alignment like C does.
type mmsghdr struct {
	Hdr unix.Msghdr
	Len uint32
}

// Client looks up TCP sockets with NETLINK_SOCK_DIAG.
//
// The socket is held by an *os.File and used through its RawConn, so
// Close may be called while a Lookup runs, from any goroutine: it makes
// that Lookup (and any later one) fail with an error wrapping
// net.ErrClosed, and the descriptor is released only once no call uses it,
// so a closed Client never writes to a descriptor number the process has
// reused. Close does not wait for the Lookup.
//
// The socket is not on Go's netpoller, and there is no deadline, because
// nothing in a lookup waits where a deadline could act: the kernel answers
// every request inside the send, and replies are read without waiting. The
// one wait there is, a send that sleeps inside the kernel on a socket's
// lock while tcp_get_info reads it (an application in the middle of a
// large send() holds it), is uninterruptible: neither a deadline nor a
// close ends it. Registering the socket with the netpoller costs, measured
// with BenchmarkLookupBatched, about 40% per socket (each batch of replies
// wakes the netpoller's epoll thread), for no wait it could bound.
//
// Lookup is not safe for concurrent use: use one Client per goroutine.
// Stats and Close are safe for concurrent use.
type Client struct {
	file   *os.File
	conn   syscall.RawConn
	closed atomic.Bool
	batch  int
	seq    uint32

	sendBuf []byte // batch * requestLen
	recvBuf []byte // batch * recvBufSize
	iovs    []unix.Iovec
	msgs    []mmsghdr
	idx     []int32            // query index per slot of the batch in flight; -1 once answered
	zones   map[string]zone    // interface indexes by zone name
	send    func([]byte) error // sends one batch: sendKernel, or a test's fake peer

	// State of the raw-conn callbacks, made once so that Lookup does not
	// allocate a closure per call.
	sendFn, recvFn func(fd uintptr) bool
	ioctlFn        func(fd uintptr)
	out            []byte        // the batch sendFn writes
	recvN          int           // messages recvFn read
	errno          syscall.Errno // recvFn's and sendFn's result
	ifr            *unix.Ifreq   // ioctlFn's request

	stats struct {
		lookups, batches, found, notEstablished, noSocket atomic.Uint64
		listener, errors, overruns, resent                atomic.Uint64
	}
}

// zone is a resolved interface name.
type zone struct {
	index uint32
}

// Open opens a NETLINK_SOCK_DIAG socket in the calling thread's network
// namespace, or in cfg.NetNS. A nil cfg means the defaults.
func Open(cfg *Config) (*Client, error) {
	var conf Config
	if cfg != nil {
		conf = *cfg
	}
	batch := conf.BatchSize
	if batch == 0 {
		batch = DefaultBatchSize
	}
	if batch < 0 || batch > 1<<16 {
		return nil, fmt.Errorf("diag: batch size %d out of range 1..65536", batch)
	}

	fd := -1
	err := netns.Do(conf.NetNS, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_INET_DIAG)
		return os.NewSyscallError("socket", err)
	})
	if err != nil {
		return nil, fmt.Errorf("diag: open netlink socket: %w", err)
	}
	if err := setup(fd, batch); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("diag: open netlink socket: %w", err)
	}
	c, err := newClient(fd, batch)
	if err != nil {
		return nil, fmt.Errorf("diag: open netlink socket: %w", err)
	}
	return c, nil
}

// newClient makes a Client on fd, a datagram socket that answers requests
// with netlink messages. The Client owns fd from now on, also on error.
func newClient(fd, batch int) (*Client, error) {
	c := &Client{
		batch:   batch,
		sendBuf: make([]byte, batch*requestLen),
		recvBuf: make([]byte, batch*recvBufSize),
		iovs:    make([]unix.Iovec, batch),
		msgs:    make([]mmsghdr, batch),
		idx:     make([]int32, 0, batch),
	}
	for j := range c.msgs {
		c.iovs[j].Base = &c.recvBuf[j*recvBufSize]
		c.iovs[j].SetLen(recvBufSize)
		c.msgs[j].Hdr.Iov = &c.iovs[j]
		c.msgs[j].Hdr.SetIovlen(1)
	}
	c.file = os.NewFile(uintptr(fd), "inet_diag")
	conn, err := c.file.SyscallConn()
	if err != nil {
		c.file.Close()
		return nil, err
	}
	c.conn = conn
	c.send = c.sendKernel
	c.sendFn = func(fd uintptr) bool {
		for {
			_, _, e := unix.Syscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&c.out[0])), uintptr(len(c.out)))
			if e == unix.EINTR {
				continue
			}
			c.errno = e
			return true
		}
	}
	c.recvFn = func(fd uintptr) bool {
		for {
			k, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&c.msgs[0])),
				uintptr(len(c.msgs)), unix.MSG_DONTWAIT, 0, 0)
			if e == unix.EINTR {
				continue
			}
			c.recvN, c.errno = int(k), e
			return true // never wait: every reply was queued during the send
		}
	}
	c.ioctlFn = func(fd uintptr) {
		c.errno = 0
		if err := unix.IoctlIfreq(int(fd), unix.SIOCGIFINDEX, c.ifr); err != nil {
			c.errno = unix.EINVAL
			errors.As(err, &c.errno)
		}
	}
	return c, nil
}

// sendKernel writes one batch of requests; the kernel answers them all
// before the write returns.
func (c *Client) sendKernel(b []byte) error {
	c.out = b
	c.errno = 0
	if err := c.conn.Write(c.sendFn); err != nil {
		return c.connErr("sendmsg", err)
	}
	if c.errno != 0 {
		return fmt.Errorf("diag: lookup: %w", os.NewSyscallError("sendmsg", c.errno))
	}
	return nil
}

// recv reads the queued replies into c.msgs without waiting. It returns the
// number of messages read and the syscall's errno.
func (c *Client) recv() (int, syscall.Errno, error) {
	c.recvN, c.errno = 0, 0
	if err := c.conn.Read(c.recvFn); err != nil {
		return 0, 0, c.connErr("recvmmsg", err)
	}
	return c.recvN, c.errno, nil
}

// connErr wraps an error of the raw conn: a closed Client's is net.ErrClosed.
func (c *Client) connErr(op string, err error) error {
	if errors.Is(err, os.ErrClosed) || c.closed.Load() {
		return fmt.Errorf("diag: lookup: %w", net.ErrClosed)
	}
	return fmt.Errorf("diag: lookup: %s: %w", op, err)
}

// setup binds the socket and sizes its buffers for a batch.
func setup(fd, batch int) error {
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return os.NewSyscallError("bind", err)
	}
	// Error replies then echo only the request's header, not all of it.
	// Older kernels lack the option; the parser does not care.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)

	if err := growBuf(fd, unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, batch*rcvbufPerReply); err != nil {
		return err
	}
	// netlink_sendmsg refuses a message longer than the send buffer.
	return growBuf(fd, unix.SO_SNDBUF, unix.SO_SNDBUFFORCE, batch*requestLen+4096)
}

// growBuf raises a socket buffer to at least want bytes (as set, before the
// kernel doubles it): forced past the sysctl limit with CAP_NET_ADMIN, else
// as far as the limit allows.
func growBuf(fd, opt, force, want int) error {
	cur, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt)
	if err != nil {
		return os.NewSyscallError("getsockopt", err)
	}
	if cur/2 >= want {
		return nil
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, want) == nil {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, want); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	return nil
}

// Lookup looks up each qs[i] and fills out[i]; out must be at least as long
// as qs. Queries go to the kernel in batches of Config.BatchSize, each batch
// in one sendmsg. Per-socket outcomes are in out[i].Status:
//
//   - Found: an established (or later) socket with tcp_info.
//   - NotEstablished: SYN_SENT, SYN_RECV, TIME_WAIT, or no tcp_info.
//   - NoSocket: ENOENT; or the kernel answered with a LISTEN socket, which
//     it does for an absent 4-tuple on a listening port; or the query cannot
//     name a socket (invalid address, IPv4 with non-mapped IPv6); or the
//     kernel returned another error for this query (also counted in
//     Stats.Errors). A NoSocket snapshot has only Time and Status set.
//
// out[i].Time is the same for all queries of one batch: the time right after
// the sendmsg returned, when the kernel has answered all of them.
// The error is only for transport failures (the socket is closed or a
// syscall failed, or replies were lost even after asking again); out is
// then partly filled. Lookup does not allocate.
func (c *Client) Lookup(qs []tcp.Query, out []tcp.Snapshot) error {
	if len(out) < len(qs) {
		return fmt.Errorf("diag: lookup: %d queries but room for %d snapshots", len(qs), len(out))
	}
	if c.closed.Load() {
		return fmt.Errorf("diag: lookup: %w", net.ErrClosed)
	}
	c.stats.lookups.Add(uint64(len(qs)))
	for start := 0; start < len(qs); start += c.batch {
		end := min(start+c.batch, len(qs))
		if err := c.lookupBatch(qs[start:end], out[start:end]); err != nil {
			return err
		}
	}
	return nil
}

// counts are one batch's contribution to Stats, added at the end.
type counts struct {
	found, notEstablished, noSocket, listener, errors, overruns, resent, batches uint64
}

func (c *Client) lookupBatch(qs []tcp.Query, out []tcp.Snapshot) error {
	var n counts
	defer c.addCounts(&n)

	c.idx = c.idx[:0]
	for i := range qs {
		if _, ok := makeRequest(qs[i]); !ok {
			out[i] = tcp.Snapshot{Time: time.Now().UnixNano(), Status: tcp.NoSocket}
			n.noSocket++
			n.errors++
			continue
		}
		c.idx = append(c.idx, int32(i))
	}
	// Replies lost to a full receive buffer are asked again, as long as
	// each round gets some answers.
	for round := 0; len(c.idx) > 0; round++ {
		before := len(c.idx)
		if round > 0 {
			n.resent += uint64(before)
		}
		if err := c.roundTrip(qs, out, &n); err != nil {
			return err
		}
		if len(c.idx) == before {
			return fmt.Errorf("diag: lookup: %d replies lost: %w", before, os.NewSyscallError("recvmmsg", unix.ENOBUFS))
		}
	}
	return nil
}

// roundTrip sends the queries named by c.idx in one sendmsg, reads the
// replies and leaves in c.idx those whose reply was lost.
func (c *Client) roundTrip(qs []tcp.Query, out []tcp.Snapshot, n *counts) error {
	cnt := len(c.idx)
	base := c.seq
	c.seq += uint32(cnt)
	for slot, i := range c.idx {
		r, _ := makeRequest(qs[i])
		if r.family == afInet6 {
			if z := c.zoneIndex(qs[i]); z != 0 {
				r.ifindex = z
			}
		}
		putRequest(c.sendBuf[slot*requestLen:], base+uint32(slot), &r)
	}

	if err := c.send(c.sendBuf[:cnt*requestLen]); err != nil {
		return err
	}
	n.batches++
	// The kernel has answered every request by now: sock_diag runs in
	// the sender's context, inside sendmsg.
	now := time.Now().UnixNano()
	for _, i := range c.idx {
		out[i].Time = now
	}

	pending := cnt
	for pending > 0 {
		k, e, err := c.recv()
		if err != nil {
			return err
		}
		if e == unix.EAGAIN {
			break // the rest were lost
		}
		if e == unix.ENOBUFS {
			n.overruns++
			continue
		}
		if e != 0 {
			return fmt.Errorf("diag: lookup: %w", os.NewSyscallError("recvmmsg", e))
		}
		for j := 0; j < k; j++ {
			l := min(int(c.msgs[j].Len), recvBufSize)
			pending -= c.handleDatagram(c.recvBuf[j*recvBufSize:j*recvBufSize+l], base, cnt, out, n)
		}
	}

	// Keep the unanswered ones for the next round.
	kept := c.idx[:0]
	for _, i := range c.idx {
		if i >= 0 {
			kept = append(kept, i)
		}
	}
	c.idx = kept
	return nil
}

// handleDatagram applies the replies in one datagram to out and returns how
// many pending queries they answered. Replies whose sequence number is not
// of the batch in flight (left over from an interrupted call) are dropped.
func (c *Client) handleDatagram(d []byte, base uint32, cnt int, out []tcp.Snapshot, n *counts) int {
	answered := 0
	for {
		typ, seq, payload, rest, ok := nextMessage(d)
		if !ok {
			return answered
		}
		d = rest
		slot := seq - base
		if slot >= uint32(cnt) || c.idx[slot] < 0 {
			continue
		}
		s := &out[c.idx[slot]]
		switch kind, errno := parseReply(typ, payload, s); kind {
		case replySocket:
			switch s.Status {
			case tcp.Found:
				n.found++
			case tcp.NotEstablished:
				n.notEstablished++
			default:
				n.noSocket++
				n.listener++
			}
		case replyError:
			switch unix.Errno(errno) {
			case 0:
				continue // an acknowledgement; not asked for
			case unix.EAGAIN, unix.ENOBUFS:
				// The kernel could not queue the reply: ask again.
				n.overruns++
				continue
			case unix.ENOENT:
			default:
				n.errors++
			}
			*s = tcp.Snapshot{Time: s.Time, Status: tcp.NoSocket}
			n.noSocket++
		default:
			continue
		}
		c.idx[slot] = -1
		answered++
	}
}

// zoneIndex resolves the interface name in a link-local IPv6 query's zone,
// in the socket's own network namespace (SIOCGIFINDEX on the netlink
// socket: no thread changes namespace). Names found are remembered per
// Client; a name not found is asked again next time, so an interface made
// later is found.
func (c *Client) zoneIndex(q tcp.Query) uint32 {
	z := q.Local.Addr().Zone()
	if z == "" {
		z = q.Remote.Addr().Zone()
	}
	if z == "" {
		return 0
	}
	if e, ok := c.zones[z]; ok {
		return e.index
	}
	ifr, err := unix.NewIfreq(z)
	if err != nil {
		return 0 // too long to be an interface name
	}
	c.ifr = ifr
	if err := c.conn.Control(c.ioctlFn); err != nil || c.errno != 0 {
		return 0
	}
	idx := ifr.Uint32()
	if c.zones == nil {
		c.zones = make(map[string]zone)
	}
	c.zones[z] = zone{index: idx}
	return idx
}

func (c *Client) addCounts(n *counts) {
	s := &c.stats
	add := func(a *atomic.Uint64, v uint64) {
		if v != 0 {
			a.Add(v)
		}
	}
	add(&s.batches, n.batches)
	add(&s.found, n.found)
	add(&s.notEstablished, n.notEstablished)
	add(&s.noSocket, n.noSocket)
	add(&s.listener, n.listener)
	add(&s.errors, n.errors)
	add(&s.overruns, n.overruns)
	add(&s.resent, n.resent)
}

// Stats returns the counts so far. It is safe for concurrent use.
func (c *Client) Stats() Stats {
	s := &c.stats
	return Stats{
		Lookups:         s.lookups.Load(),
		Batches:         s.batches.Load(),
		Found:           s.found.Load(),
		NotEstablished:  s.notEstablished.Load(),
		NoSocket:        s.noSocket.Load(),
		ListenerReplies: s.listener.Load(),
		Errors:          s.errors.Load(),
		Overruns:        s.overruns.Load(),
		Resent:          s.resent.Load(),
	}
}

// Close closes the socket. It is idempotent and safe for concurrent use,
// also while a Lookup runs: that Lookup fails with an error wrapping
// net.ErrClosed, and the descriptor is released once no call uses it.
func (c *Client) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	if err := c.file.Close(); err != nil {
		return fmt.Errorf("diag: close: %w", err)
	}
	return nil
}

// Package netlab builds a two-host test lab: two network namespaces joined
// by a veth pair, with IPv4 and IPv6 addresses, optionally a TBF rate limit
// on one side and offloads (TSO/GSO/GRO) off. It is used by the integration
// tests, the demo and the benchmarks.
//
// # Privileges
//
// Building a lab needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN).
package netlab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"unsafe"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/siftr-probe/siftr-probe/internal/netns"
)

// Config describes a lab. The zero value is a plain veth pair with offloads on.
type Config struct {
	// Name prefixes the namespace names (default "siftr").
	Name string
	// RateBitsPerSec, if non-zero, puts a TBF rate limit on A's egress so
	// that a bulk transfer from A to B fills a queue and cwnd moves.
	RateBitsPerSec uint64
	// QueueBytes is the TBF queue limit (default 256 KiB).
	QueueBytes uint32
	// NoOffloads turns TSO, GSO and GRO off on both ends, so every wire
	// segment is one captured packet.
	NoOffloads bool
	// Subnet numbers the lab's addresses: 10.77.Subnet.1 and .2, and
	// fd77:0:0:Subnet::1 and ::2 (default 0: 10.77.0.x, fd77::x), so that
	// labs up at once can have addresses of their own.
	Subnet uint8
}

// Host is one end of the lab.
type Host struct {
	// NetNS is the namespace's path (/run/netns/NAME).
	NetNS string
	// Iface is the host's veth interface name.
	Iface string
	// Addr4 and Addr6 are the host's addresses on the veth.
	Addr4, Addr6 netip.Addr
	// LinkLocal is a fixed IPv6 link-local address on the veth (fe80::77:1
	// on A, fe80::77:2 on B), usable at once (no duplicate address
	// detection). Sockets on it are bound to the veth; dial it with the
	// zone, as "[fe80::77:2%veth-a]:5201".
	LinkLocal netip.Addr
}

// Do runs fn inside the host's network namespace (see netns.Do).
func (h *Host) Do(fn func() error) error { return netns.Do(h.NetNS, fn) }

// Lab is two hosts, A and B, joined by a veth pair.
type Lab struct {
	A, B Host
}

var seq atomic.Uint32

// New builds a lab. Close removes it.
func New(cfg Config) (lab *Lab, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("netlab: building network namespaces needs root")
	}
	name := cfg.Name
	if name == "" {
		name = "siftr"
	}
	id := fmt.Sprintf("%s-%d-%d", name, os.Getpid()%100000, seq.Add(1))
	v4 := func(h byte) netip.Addr { return netip.AddrFrom4([4]byte{10, 77, cfg.Subnet, h}) }
	v6 := func(h byte) netip.Addr { return netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x77, 7: cfg.Subnet, 15: h}) }
	lab = &Lab{
		A: Host{Iface: "veth-a", Addr4: v4(1), Addr6: v6(1), LinkLocal: netip.MustParseAddr("fe80::77:1")},
		B: Host{Iface: "veth-b", Addr4: v4(2), Addr6: v6(2), LinkLocal: netip.MustParseAddr("fe80::77:2")},
	}
	defer func() {
		if err != nil {
			lab.Close()
			lab = nil
		}
	}()
	if lab.A.NetNS, err = netns.Create(id + "-a"); err != nil {
		return lab, err
	}
	if lab.B.NetNS, err = netns.Create(id + "-b"); err != nil {
		return lab, err
	}
	nsA, err := vnetns.GetFromPath(lab.A.NetNS)
	if err != nil {
		return lab, err
	}
	defer nsA.Close()
	nsB, err := vnetns.GetFromPath(lab.B.NetNS)
	if err != nil {
		return lab, err
	}
	defer nsB.Close()

	hA, err := netlink.NewHandleAt(nsA)
	if err != nil {
		return lab, fmt.Errorf("netlab: netlink in %s: %w", lab.A.NetNS, err)
	}
	defer hA.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: lab.A.Iface, MTU: 1500},
		PeerName:      lab.B.Iface,
		PeerNamespace: netlink.NsFd(nsB),
	}
	if err := hA.LinkAdd(veth); err != nil {
		return lab, fmt.Errorf("netlab: add veth pair: %w", err)
	}
	for _, h := range []struct {
		host *Host
		ns   vnetns.NsHandle
	}{{&lab.A, nsA}, {&lab.B, nsB}} {
		if err := configure(h.host, h.ns, cfg); err != nil {
			return lab, err
		}
	}
	if cfg.RateBitsPerSec > 0 {
		link, err := hA.LinkByName(lab.A.Iface)
		if err != nil {
			return lab, err
		}
		limit := cfg.QueueBytes
		if limit == 0 {
			limit = 256 << 10
		}
		rate := cfg.RateBitsPerSec / 8
		burst := uint32(64 << 10)
		tbf := &netlink.Tbf{
			QdiscAttrs: netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT},
			Rate:       rate,
			Limit:      limit,
			Buffer:     netlink.Xmittime(rate, burst),
		}
		if err := hA.QdiscAdd(tbf); err != nil {
			return lab, fmt.Errorf("netlab: add tbf qdisc: %w", err)
		}
	}
	return lab, nil
}

func configure(h *Host, ns vnetns.NsHandle, cfg Config) error {
	hd, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlab: netlink in %s: %w", h.NetNS, err)
	}
	defer hd.Close()
	lo, err := hd.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := hd.LinkSetUp(lo); err != nil {
		return fmt.Errorf("netlab: lo up: %w", err)
	}
	link, err := hd.LinkByName(h.Iface)
	if err != nil {
		return err
	}
	for _, a := range []struct {
		addr netip.Addr
		bits int
	}{{h.Addr4, 24}, {h.Addr6, 64}, {h.LinkLocal, 64}} {
		pfx := netip.PrefixFrom(a.addr, a.bits)
		nla, err := netlink.ParseAddr(pfx.String())
		if err != nil {
			return err
		}
		if a.addr.Is6() {
			nla.Flags = unix.IFA_F_NODAD
		}
		if err := hd.AddrAdd(link, nla); err != nil {
			return fmt.Errorf("netlab: add %s on %s: %w", pfx, h.Iface, err)
		}
	}
	if cfg.NoOffloads {
		err := netns.Do(h.NetNS, func() error { return setOffloads(h.Iface, false) })
		if err != nil {
			return err
		}
	}
	if err := hd.LinkSetUp(link); err != nil {
		return fmt.Errorf("netlab: %s up: %w", h.Iface, err)
	}
	return nil
}

// setOffloads switches TSO, GSO and GRO with the legacy ethtool ioctls.
func setOffloads(iface string, on bool) error {
	const (
		ethtoolSTSO = 0x0000001f
		ethtoolSGSO = 0x00000024
		ethtoolSGRO = 0x0000002c
	)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	var data uint32
	if on {
		data = 1
	}
	for _, cmd := range []uint32{ethtoolSTSO, ethtoolSGSO, ethtoolSGRO} {
		val := struct{ cmd, data uint32 }{cmd, data}
		var ifr struct {
			name [unix.IFNAMSIZ]byte
			data uintptr
			_    [16]byte
		}
		copy(ifr.name[:], iface)
		ifr.data = uintptr(unsafe.Pointer(&val))
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
		if errno != 0 {
			return fmt.Errorf("netlab: ethtool %#x on %s: %w", cmd, iface, errno)
		}
	}
	return nil
}

// Close removes both namespaces and with them the veth pair.
func (l *Lab) Close() error {
	var errs []error
	for _, p := range []string{l.A.NetNS, l.B.NetNS} {
		if p != "" {
			errs = append(errs, netns.Remove(p))
		}
	}
	return errors.Join(errs...)
}

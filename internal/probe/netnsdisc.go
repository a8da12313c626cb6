package probe

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/siftr-probe/siftr-probe/internal/netns"
)

// netnsInfo is a network namespace found on the host.
type netnsInfo struct {
	Inode uint64
	Name  string // its name under /run/netns, if it has one
	Path  string // a path that opens it: /run/netns/NAME or /proc/PID/ns/net
	Host  bool   // the probe's own namespace
}

// netnsDirs are where named network namespaces are bind-mounted: ip netns
// and CNI plugins use /run/netns, Docker its own directory.
var netnsDirs = []string{"/run/netns", "/var/run/netns", "/var/run/docker/netns"}

// discoverNetNS lists the network namespaces of the host: those of running
// processes (/proc/PID/ns/net) and the bind-mounted ones (netnsDirs),
// once each, by inode. The first path found for each is kept, named ones
// first.
func discoverNetNS(procRoot string) (map[uint64]netnsInfo, error) {
	found := map[uint64]netnsInfo{}
	self, err := nsInode(filepath.Join(procRoot, "self/ns/net"))
	if err != nil {
		return nil, fmt.Errorf("read this process's network namespace: %w", err)
	}
	found[self] = netnsInfo{Inode: self, Path: filepath.Join(procRoot, "self/ns/net"), Host: true}
	for _, dir := range netnsDirs {
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			ino, err := nsInode(p)
			if err != nil {
				continue // not a namespace (a file CNI left, a stale mount point)
			}
			if ns, ok := found[ino]; ok {
				if ns.Name == "" {
					ns.Name = e.Name()
					if !ns.Host {
						ns.Path = p
					}
					found[ino] = ns
				}
				continue
			}
			found[ino] = netnsInfo{Inode: ino, Name: e.Name(), Path: p}
		}
	}
	procs, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, err
	}
	for _, e := range procs {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		p := filepath.Join(procRoot, e.Name(), "ns/net")
		link, err := os.Readlink(p)
		if err != nil {
			continue // gone, or a kernel thread
		}
		ino, ok := parseNSLink(link)
		if !ok {
			continue
		}
		if _, ok := found[ino]; !ok {
			found[ino] = netnsInfo{Inode: ino, Path: p}
		}
	}
	return found, nil
}

// parseNSLink reads the inode from a namespace link, "net:[4026531840]".
func parseNSLink(s string) (uint64, bool) {
	v, ok := strings.CutPrefix(s, "net:[")
	if !ok || !strings.HasSuffix(v, "]") {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSuffix(v, "]"), 10, 64)
	return n, err == nil
}

// nsInode is the inode of the network namespace file at path.
func nsInode(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	// A bind-mounted namespace is on nsfs; an unmounted mount point is not.
	var fs syscall.Statfs_t
	if err := syscall.Statfs(path, &fs); err != nil {
		return 0, err
	}
	const nsfsMagic = 0x6e736673
	if fs.Type != nsfsMagic {
		return 0, fmt.Errorf("%s is not a namespace", path)
	}
	return st.Ino, nil
}

// netnsIface is an interface of a namespace the probe can capture on.
type netnsIface struct {
	Name  string
	Addrs []netip.Addr
}

// netnsIfaces lists the interfaces of the namespace at path that match
// pattern (a shell pattern such as "eth*"; "" = every interface with a
// global unicast address), with their addresses.
func netnsIfaces(path, pattern string) ([]netnsIface, error) {
	var out []netnsIface
	err := netns.Do(path, func() error {
		ifs, err := net.Interfaces()
		if err != nil {
			return err
		}
		for _, ifi := range ifs {
			if ifi.Flags&net.FlagUp == 0 {
				continue
			}
			var addrs []netip.Addr
			if as, err := ifi.Addrs(); err == nil {
				for _, a := range as {
					if p, err := netip.ParsePrefix(a.String()); err == nil {
						addrs = append(addrs, p.Addr())
					}
				}
			}
			if pattern != "" {
				if ok, _ := filepath.Match(pattern, ifi.Name); !ok {
					continue
				}
			} else if !slices.ContainsFunc(addrs, func(a netip.Addr) bool { return a.IsGlobalUnicast() }) {
				continue
			}
			out = append(out, netnsIface{Name: ifi.Name, Addrs: addrs})
		}
		return nil
	})
	return out, err
}

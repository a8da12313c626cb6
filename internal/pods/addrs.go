package pods

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/siftr-probe/siftr-probe/internal/netns"
)

// Addrs returns the addresses of the interfaces of the network namespace at
// path (/run/netns/NAME, /proc/PID/ns/net; empty: the caller's own), read
// from inside it, as Lookup takes them. Loopback, link-local and multicast
// addresses are left out: every namespace has them. The result is sorted.
func Addrs(path string) ([]netip.Addr, error) {
	var out []netip.Addr
	err := netns.Do(path, func() error {
		ifaddrs, err := net.InterfaceAddrs()
		if err != nil {
			return fmt.Errorf("interface addresses: %w", err)
		}
		for _, ia := range ifaddrs {
			ipn, ok := ia.(*net.IPNet)
			if !ok {
				continue
			}
			a, ok := netip.AddrFromSlice(ipn.IP)
			if a = normalize(a); ok && usable(a) && !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pods: addresses of %s: %w", path, err)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

//go:build linux

package exact

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// hooks are the programs attached to one interface's ingress and egress.
// It is created and released in the interface's network namespace.
type hooks struct {
	mode  string      // AttachTCX or AttachTC
	links []link.Link // tcx
	// clsact: the filters added, and whether the qdisc was added too.
	ifindex    int
	filters    []*netlink.BpfFilter
	addedQdisc bool
}

// filterPrefix names the cls_bpf filters of this program; the pid after it
// tells a live probe's filters from those a killed one left behind.
const filterPrefix = "siftr-probe/"

// attach attaches ingress and egress to the interface ifindex of the
// calling thread's network namespace, as mode says (AttachAuto: tcx, and
// clsact where the kernel has no tcx).
func attach(mode string, ifindex int, ingress, egress *ebpf.Program) (*hooks, error) {
	if mode == AttachAuto || mode == AttachTCX {
		h, err := attachTCX(ifindex, ingress, egress)
		if err == nil || mode == AttachTCX || !errors.Is(err, ebpf.ErrNotSupported) {
			return h, err
		}
	}
	return attachTC(ifindex, ingress, egress)
}

func attachTCX(ifindex int, ingress, egress *ebpf.Program) (*hooks, error) {
	h := &hooks{mode: AttachTCX, ifindex: ifindex}
	for _, a := range []struct {
		prog *ebpf.Program
		typ  ebpf.AttachType
	}{{ingress, ebpf.AttachTCXIngress}, {egress, ebpf.AttachTCXEgress}} {
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: a.prog, Attach: a.typ})
		if err != nil {
			h.detach()
			return nil, fmt.Errorf("attach tcx: %w", err)
		}
		h.links = append(h.links, l)
	}
	return h, nil
}

// attachTC adds a clsact qdisc if the interface has none, and a
// direct-action cls_bpf filter on each of its hooks, at a priority no
// other filter there has, named filterPrefix+pid. It first removes the
// filters of probes that are no longer running. A qdisc that only probes
// use is removed by the last one to detach.
func attachTC(ifindex int, ingress, egress *ebpf.Program) (*hooks, error) {
	lk, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return nil, fmt.Errorf("attach tc: %w", err)
	}
	h := &hooks{mode: AttachTC, ifindex: ifindex}
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	switch err := netlink.QdiscAdd(qdisc); {
	case err == nil:
		h.addedQdisc = true
	case errors.Is(err, unix.EEXIST):
		// Another probe's: it is shared, and the last probe out removes it.
		h.addedQdisc = onlyOurs(lk)
	default:
		return nil, fmt.Errorf("attach tc: add clsact qdisc: %w", err)
	}
	removeStale(lk)
	for _, a := range []struct {
		prog   *ebpf.Program
		parent uint32
	}{{ingress, netlink.HANDLE_MIN_INGRESS}, {egress, netlink.HANDLE_MIN_EGRESS}} {
		prio, err := freePriority(lk, a.parent)
		if err != nil {
			h.detach()
			return nil, fmt.Errorf("attach tc: %w", err)
		}
		f := &netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{
				LinkIndex: ifindex,
				Parent:    a.parent,
				Handle:    netlink.MakeHandle(0, 1),
				Protocol:  unix.ETH_P_ALL,
				Priority:  prio,
			},
			Fd:           a.prog.FD(),
			Name:         filterPrefix + strconv.Itoa(os.Getpid()),
			DirectAction: true,
		}
		if err := netlink.FilterAdd(f); err != nil {
			h.detach()
			return nil, fmt.Errorf("attach tc: add cls_bpf filter: %w", err)
		}
		h.filters = append(h.filters, f)
	}
	return h, nil
}

// freePriority returns a filter priority no filter on parent has, from
// 0xc000 up: above where tc's own auto-assigned priorities start (49152,
// counting down), so that ours run after filters other tools added.
func freePriority(lk netlink.Link, parent uint32) (uint16, error) {
	fs, err := netlink.FilterList(lk, parent)
	if err != nil {
		return 0, fmt.Errorf("list filters: %w", err)
	}
	used := map[uint16]bool{}
	for _, f := range fs {
		used[f.Attrs().Priority] = true
	}
	for p := uint16(0xc000); p < 0xffff; p++ {
		if !used[p] {
			return p, nil
		}
	}
	return 0, errors.New("no free filter priority")
}

// onlyOurs reports whether the interface's clsact hooks hold filters and
// all of them are probes'.
func onlyOurs(lk netlink.Link) bool {
	n := 0
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		fs, err := netlink.FilterList(lk, parent)
		if err != nil {
			return false
		}
		for _, f := range fs {
			bf, ok := f.(*netlink.BpfFilter)
			if !ok || !strings.HasPrefix(bf.Name, filterPrefix) {
				return false
			}
			n++
		}
	}
	return n > 0
}

// removeStale removes the cls_bpf filters of probes whose process is gone
// (killed before they could remove them).
func removeStale(lk netlink.Link) {
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		fs, err := netlink.FilterList(lk, parent)
		if err != nil {
			continue
		}
		for _, f := range fs {
			bf, ok := f.(*netlink.BpfFilter)
			if !ok {
				continue
			}
			pid, ok := strings.CutPrefix(bf.Name, filterPrefix)
			if !ok {
				continue
			}
			if n, err := strconv.Atoi(pid); err == nil && !alive(n) {
				netlink.FilterDel(bf)
			}
		}
	}
}

// alive reports whether a process with this pid exists.
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// detach removes what attach added. It must run in the interface's
// network namespace for the clsact path; tcx links go with their fds.
func (h *hooks) detach() error {
	var errs []error
	for _, l := range h.links {
		errs = append(errs, l.Close())
	}
	h.links = nil
	for _, f := range h.filters {
		if err := netlink.FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("remove cls_bpf filter: %w", err))
		}
	}
	h.filters = nil
	if h.addedQdisc {
		h.addedQdisc = false
		if lk, err := netlink.LinkByIndex(h.ifindex); err == nil {
			if fs, _ := netlink.FilterList(lk, netlink.HANDLE_MIN_INGRESS); len(fs) == 0 {
				if fs, _ := netlink.FilterList(lk, netlink.HANDLE_MIN_EGRESS); len(fs) == 0 {
					netlink.QdiscDel(&netlink.GenericQdisc{
						QdiscAttrs: netlink.QdiscAttrs{LinkIndex: h.ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
						QdiscType:  "clsact",
					})
				}
			}
		}
	}
	return errors.Join(errs...)
}

package pods

import (
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// entry is one indexed pod.
type entry struct {
	key      string // namespace/name, the informer's key
	pod      Pod
	ips      []netip.Addr
	created  time.Time
	deleting bool // metadata.deletionTimestamp is set
}

func (e *entry) equal(o *entry) bool {
	return e.pod.Namespace == o.pod.Namespace && e.pod.Name == o.pod.Name && e.pod.UID == o.pod.UID &&
		e.pod.Container == o.pod.Container && maps.Equal(e.pod.Labels, o.pod.Labels) &&
		slices.Equal(e.ips, o.ips) && e.created.Equal(o.created) && e.deleting == o.deleting
}

// better reports whether e should answer for an IP that o claims too: a pod
// not being deleted over one that is (its IP may already be handed on),
// then the newer, then by key so the answer does not depend on map order.
func (e *entry) better(o *entry) bool {
	if o == nil {
		return true
	}
	if e.deleting != o.deleting {
		return !e.deleting
	}
	if !e.created.Equal(o.created) {
		return e.created.After(o.created)
	}
	return e.key < o.key
}

// index maps pod IPs to the pods of one node. It is safe for concurrent use.
type index struct {
	node string
	mu   sync.RWMutex // guards pods, byIP
	pods map[string]*entry
	byIP map[netip.Addr][]*entry
}

func (x *index) init(node string) {
	x.node = node
	x.pods = make(map[string]*entry)
	x.byIP = make(map[netip.Addr][]*entry)
}

// set indexes p, or drops it if it no longer qualifies, and reports whether
// the index changed.
func (x *index) set(p *corev1.Pod) bool {
	key := p.Namespace + "/" + p.Name
	if p.Namespace == "" {
		key = p.Name
	}
	e := x.entryFor(p, key)
	if e == nil {
		return x.delete(key)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	old := x.pods[key]
	if old != nil && old.equal(e) {
		return false
	}
	x.unlink(old)
	x.pods[key] = e
	for _, ip := range e.ips {
		x.byIP[ip] = append(x.byIP[ip], e)
	}
	return true
}

// delete drops the pod with the informer key key and reports whether it was
// there.
func (x *index) delete(key string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	old := x.pods[key]
	if old == nil {
		return false
	}
	x.unlink(old)
	delete(x.pods, key)
	return true
}

// unlink removes e from byIP. x.mu must be held.
func (x *index) unlink(e *entry) {
	if e == nil {
		return
	}
	for _, ip := range e.ips {
		l := slices.DeleteFunc(x.byIP[ip], func(o *entry) bool { return o == e })
		if len(l) == 0 {
			delete(x.byIP, ip)
		} else {
			x.byIP[ip] = l
		}
	}
}

func (x *index) lookup(addrs []netip.Addr) (Pod, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var best *entry
	for _, a := range addrs {
		for _, e := range x.byIP[normalize(a)] {
			if e.better(best) {
				best = e
			}
		}
	}
	if best == nil {
		return Pod{}, false
	}
	return best.pod, true
}

func (x *index) len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.pods)
}

func normalize(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }

// usable reports whether a can be a pod IP: a unicast address that is not
// loopback or link-local (those are in every namespace).
func usable(a netip.Addr) bool {
	return a.IsValid() && !a.IsUnspecified() && !a.IsLoopback() && !a.IsLinkLocalUnicast() &&
		!a.IsMulticast() && !a.IsInterfaceLocalMulticast()
}

// entryFor is the index entry of p, or nil if p is not one to match
// namespaces against: on another node, in the host's network namespace,
// finished, or without an IP yet.
func (x *index) entryFor(p *corev1.Pod, key string) *entry {
	if p.Spec.NodeName != x.node || p.Spec.HostNetwork ||
		p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return nil
	}
	var ips []netip.Addr
	add := func(s string) {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return
		}
		if a = normalize(a); usable(a) && !slices.Contains(ips, a) {
			ips = append(ips, a)
		}
	}
	for _, ip := range p.Status.PodIPs {
		add(ip.IP)
	}
	add(p.Status.PodIP) // what servers before podIPs (1.16) set; podIPs[0] otherwise
	if len(ips) == 0 {
		return nil
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	return &entry{
		key: key,
		pod: Pod{
			Namespace: p.Namespace,
			Name:      p.Name,
			UID:       string(p.UID),
			Container: onlyContainer(p),
			Labels:    p.Labels,
		},
		ips:      ips,
		created:  p.CreationTimestamp.Time,
		deleting: p.DeletionTimestamp != nil,
	}
}

// onlyContainer is the name of the pod's one long-running container, or ""
// if it has several: its containers and its native sidecars (init
// containers with restartPolicy Always, which run beside them).
func onlyContainer(p *corev1.Pod) string {
	n := len(p.Spec.Containers)
	for _, c := range p.Spec.InitContainers {
		if isSidecar(c) {
			n++
		}
	}
	if n != 1 || len(p.Spec.Containers) != 1 {
		return ""
	}
	return p.Spec.Containers[0].Name
}

func isSidecar(c corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

// slim is the informer's transform: it keeps of a pod only what the index
// reads, so the cache holds a few hundred bytes per pod rather than the
// whole object (managed fields, specs, statuses). It is idempotent, as the
// informer may apply it to an object it already transformed.
func slim(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	s := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:              p.Name,
			Namespace:         p.Namespace,
			UID:               p.UID,
			ResourceVersion:   p.ResourceVersion,
			Labels:            p.Labels,
			CreationTimestamp: p.CreationTimestamp,
			DeletionTimestamp: p.DeletionTimestamp,
		},
		Spec: corev1.PodSpec{
			NodeName:    p.Spec.NodeName,
			HostNetwork: p.Spec.HostNetwork,
		},
		Status: corev1.PodStatus{
			Phase:  p.Status.Phase,
			PodIP:  p.Status.PodIP,
			PodIPs: p.Status.PodIPs,
		},
	}
	if len(p.Spec.Containers) > 0 {
		s.Spec.Containers = make([]corev1.Container, len(p.Spec.Containers))
		for i, c := range p.Spec.Containers {
			s.Spec.Containers[i] = corev1.Container{Name: c.Name}
		}
	}
	for _, c := range p.Spec.InitContainers {
		if isSidecar(c) {
			s.Spec.InitContainers = append(s.Spec.InitContainers, corev1.Container{Name: c.Name, RestartPolicy: c.RestartPolicy})
		}
	}
	return s, nil
}

package pods

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/siftr-probe/siftr-probe/internal/pods/podstest"

	"github.com/siftr-probe/siftr-probe/internal/netlab"
	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
)

// TestIntegrationNamespaceLookup builds two real network namespaces joined
// by a veth pair, reads each one's addresses from inside it, and checks
// that Lookup finds the pod the (fake) API server gives those IPs: the
// kernel is real, only Kubernetes is stood in for.
func TestIntegrationNamespaceLookup(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{Name: "pods"})
	f := podstest.NewFakeAPI(t)
	f.Put(podstest.Pod(node, "shop", "client", lab.A.Addr4.String(), lab.A.Addr6.String()))
	f.Put(podstest.Pod(node, "shop", "server", lab.B.Addr6.String(), lab.B.Addr4.String()))
	// The same IP in a pod of another node: not this namespace's.
	f.Put(podstest.Pod("worker-2", "shop", "elsewhere", lab.A.Addr4.String()))
	w := start(t, f, Config{})

	for _, tc := range []struct {
		host *netlab.Host
		want string
	}{{&lab.A, "client"}, {&lab.B, "server"}} {
		got, err := Addrs(tc.host.NetNS)
		if err != nil {
			t.Fatal(err)
		}
		// What the namespace itself holds: its veth's addresses, not
		// loopback or the link-local one, and none of the other side's.
		want := []netip.Addr{tc.host.Addr4, tc.host.Addr6}
		slices.SortFunc(want, netip.Addr.Compare)
		if !slices.Equal(got, want) {
			t.Errorf("Addrs(%s) = %v, want %v", tc.host.NetNS, got, want)
		}
		p, ok := w.Lookup(got)
		if !ok || p.Namespace != "shop" || p.Name != tc.want || p.Container != "main" || p.Labels["app"] != tc.want {
			t.Errorf("Lookup(addresses of %s) = %+v (%t), want shop/%s", tc.host.NetNS, p, ok, tc.want)
		}
	}

	// The pod of A ends: its namespace has no pod any more.
	done := podstest.Pod(node, "shop", "client", lab.A.Addr4.String(), lab.A.Addr6.String())
	done.Status.Phase = "Succeeded"
	f.Put(done)
	a, err := Addrs(lab.A.NetNS)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "finished pod", func() bool { _, ok := w.Lookup(a); return !ok })

	// The host's own namespace is no pod's.
	host, err := Addrs("")
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := w.Lookup(host); ok {
		t.Errorf("Lookup(addresses of the test's namespace %v) = %+v", host, p)
	}
}

func TestAddrsMissingNamespace(t *testing.T) {
	if _, err := Addrs("/nonexistent/netns"); err == nil {
		t.Error("Addrs of a missing namespace: no error")
	}
}

package pods

import (
	"context"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/siftr-probe/siftr-probe/internal/pods/podstest"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const node = "worker-1"

// start runs a Watcher against f until the test ends and waits for its
// first sync.
func start(t *testing.T, f *podstest.FakeAPI, cfg Config) *Watcher {
	t.Helper()
	if cfg.NodeName == "" {
		cfg.NodeName = node
	}
	if cfg.Kubeconfig == "" {
		cfg.Kubeconfig = f.Kubeconfig(f.Token)
	}
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10 s of its context's end")
		}
	})
	eventually(t, 10*time.Second, "first sync", func() bool { return w.Synced() })
	return w
}

// eventually polls cond every 5 ms until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	begin := time.Now()
	for !cond() {
		if time.Since(begin) > timeout {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(begin)
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func lookupName(w *Watcher, a ...string) string {
	p, ok := w.Lookup(addrs(a...))
	if !ok {
		return ""
	}
	return p.Namespace + "/" + p.Name
}

func TestLookup(t *testing.T) {
	f := podstest.NewFakeAPI(t)
	web := podstest.Pod(node, "shop", "web", "10.244.1.5", "fd00:244:1::5")
	web.Labels = map[string]string{"app": "web", "tier": "front"}
	f.Put(web)
	two := podstest.Pod(node, "shop", "two", "10.244.1.6")
	two.Spec.Containers = append(two.Spec.Containers, corev1.Container{Name: "proxy"})
	f.Put(two)
	always := corev1.ContainerRestartPolicyAlways
	sidecar := podstest.Pod(node, "shop", "sidecar", "10.244.1.7")
	sidecar.Spec.InitContainers = []corev1.Container{{Name: "mesh", RestartPolicy: &always}, {Name: "migrate"}}
	f.Put(sidecar)
	initOnly := podstest.Pod(node, "shop", "init-only", "10.244.1.8")
	initOnly.Spec.InitContainers = []corev1.Container{{Name: "migrate"}}
	f.Put(initOnly)
	hostNet := podstest.Pod(node, "kube-system", "kube-proxy", "192.0.2.10")
	hostNet.Spec.HostNetwork = true
	f.Put(hostNet)
	done := podstest.Pod(node, "batch", "job-1", "10.244.1.9")
	done.Status.Phase = corev1.PodSucceeded
	f.Put(done)
	f.Put(podstest.Pod(node, "batch", "pending")) // no IP yet
	f.Put(podstest.Pod("worker-2", "shop", "elsewhere", "10.244.2.5"))

	w := start(t, f, Config{})
	p, ok := w.Lookup(addrs("127.0.0.1", "fe80::1", "10.244.1.5"))
	if !ok {
		t.Fatal("no pod for 10.244.1.5")
	}
	want := Pod{Namespace: "shop", Name: "web", UID: p.UID, Container: "main", Labels: map[string]string{"app": "web", "tier": "front"}}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Errorf("Lookup(10.244.1.5) (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(p.UID, "uid-web-") {
		t.Errorf("UID %q is not the one the API server gave", p.UID)
	}

	for _, tc := range []struct {
		addrs     []string
		name      string
		container string
	}{
		{[]string{"fd00:244:1::5"}, "shop/web", "main"},     // the second of podIPs
		{[]string{"::ffff:10.244.1.5"}, "shop/web", "main"}, // IPv4-mapped
		{[]string{"10.244.1.6"}, "shop/two", ""},            // two containers
		{[]string{"10.244.1.7"}, "shop/sidecar", ""},        // a native sidecar runs beside main
		{[]string{"10.244.1.8"}, "shop/init-only", "main"},  // init containers that ran to completion do not count
		{[]string{"192.0.2.10"}, "", ""},                    // hostNetwork: the node's namespace is no pod's
		{[]string{"10.244.1.9"}, "", ""},                    // finished: its IP may be someone else's now
		{[]string{"10.244.2.5"}, "", ""},                    // another node's pod
		{[]string{"127.0.0.1", "::1", "fe80::1"}, "", ""},   // in every namespace
		{nil, "", ""},
	} {
		p, ok := w.Lookup(addrs(tc.addrs...))
		got := ""
		if ok {
			got = p.Namespace + "/" + p.Name
		}
		if got != tc.name || p.Container != tc.container {
			t.Errorf("Lookup(%v) = %q container %q, want %q container %q", tc.addrs, got, p.Container, tc.name, tc.container)
		}
	}
	if s := w.Stats(); s.Pods != 4 || !s.Synced {
		t.Errorf("Stats %+v, want 4 pods indexed (web, two, sidecar, init-only; pending has no IP) and synced", s)
	}
	// The node's pods only, asked of the server.
	for _, r := range f.RequestLog() {
		if r.FieldSelector != "spec.nodeName="+node {
			t.Errorf("request %+v does not select spec.nodeName=%s", r, node)
		}
	}
}

// TestChangesWithinASecond: additions, changes and deletions reach Lookup
// within a second, and OnChange is called for each.
func TestChangesWithinASecond(t *testing.T) {
	f := podstest.NewFakeAPI(t)
	f.Put(podstest.Pod(node, "default", "old", "10.244.1.2"))
	w := start(t, f, Config{})
	var changes atomic.Int64
	w.OnChange(func() { changes.Add(1) })

	// step makes a change on the server and waits for Lookup to show it and
	// for an OnChange call after it.
	step := func(what string, change func(), cond func() bool) {
		t.Helper()
		before := changes.Load()
		change()
		eventually(t, time.Second, what, cond)
		eventually(t, time.Second, what+": OnChange", func() bool { return changes.Load() > before })
	}

	step("added pod", func() { f.Put(podstest.Pod(node, "default", "new", "10.244.1.3")) },
		func() bool { return lookupName(w, "10.244.1.3") == "default/new" })

	relabeled := podstest.Pod(node, "default", "new", "10.244.1.3")
	relabeled.Labels["version"] = "2"
	step("changed labels", func() { f.Put(relabeled) }, func() bool {
		p, _ := w.Lookup(addrs("10.244.1.3"))
		return p.Labels["version"] == "2"
	})

	moved := relabeled.DeepCopy()
	podstest.SetIPs(moved, "10.244.1.4", "fd00::4")
	step("changed IP", func() { f.Put(moved) }, func() bool {
		return lookupName(w, "10.244.1.4") == "default/new" && lookupName(w, "fd00::4") == "default/new" && lookupName(w, "10.244.1.3") == ""
	})

	finished := moved.DeepCopy()
	finished.Status.Phase = corev1.PodFailed
	step("finished pod", func() { f.Put(finished) }, func() bool { return lookupName(w, "10.244.1.4") == "" })

	step("deleted pod", func() { f.Remove("default", "old") }, func() bool { return lookupName(w, "10.244.1.2") == "" })

	// A status change that the index does not read is no change: of a
	// condition change and then a new pod, only the new pod calls OnChange
	// (one index change, one call; TestIndexSetReportsChanges has the rule).
	quiet := podstest.Pod(node, "default", "quiet", "10.244.1.5")
	step("quiet pod", func() { f.Put(quiet) }, func() bool { return lookupName(w, "10.244.1.5") == "default/quiet" })
	time.Sleep(50 * time.Millisecond) // no call pending
	before := changes.Load()
	quiet.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	f.Put(quiet)
	f.Put(podstest.Pod(node, "default", "marker", "10.244.1.6"))
	eventually(t, time.Second, "marker pod", func() bool { return lookupName(w, "10.244.1.6") == "default/marker" })
	eventually(t, time.Second, "OnChange for marker pod", func() bool { return changes.Load() > before })
	time.Sleep(50 * time.Millisecond)
	if n := changes.Load() - before; n != 1 {
		t.Errorf("%d OnChange calls after a condition change and a new pod, want 1", n)
	}
}

// TestReconnect: the server closes the watch; the Watcher watches again
// from where it was and sees what changed meanwhile. Then the change log
// is compacted too, so the watch cannot resume: it lists again.
func TestReconnect(t *testing.T) {
	f := podstest.NewFakeAPI(t)
	f.Put(podstest.Pod(node, "default", "a", "10.244.1.2"))
	w := start(t, f, Config{})
	s0 := w.Stats()

	f.CloseWatches()
	f.Put(podstest.Pod(node, "default", "b", "10.244.1.3"))
	eventually(t, 10*time.Second, "pod added while the watch was closed", func() bool { return lookupName(w, "10.244.1.3") == "default/b" })
	if s := w.Stats(); s.Watches <= s0.Watches {
		t.Errorf("watches %d after a closed watch, want more than %d", s.Watches, s0.Watches)
	}

	// A deletion the change log no longer has: the watch gets 410
	// Expired, and the Watcher lists (or stream-lists) again.
	s1 := w.Stats()
	f.RemoveCompacted("default", "a")
	f.Put(podstest.Pod(node, "default", "c", "10.244.1.4"))
	eventually(t, 15*time.Second, "state after an expired watch", func() bool {
		return lookupName(w, "10.244.1.4") == "default/c" && lookupName(w, "10.244.1.2") == ""
	})
	s := w.Stats()
	if s.Errors <= s1.Errors || !strings.Contains(s.LastError, "too old resource version") {
		t.Errorf("Stats %+v: want the 410 counted as an error", s)
	}
	if !s.Synced {
		t.Error("not synced after relisting")
	}
}

// TestListFallback: an API server without streaming lists (it refuses
// sendInitialEvents) is listed, then watched.
func TestListFallback(t *testing.T) {
	f := podstest.NewFakeAPI(t)
	f.SetNoStreaming(true)
	f.Put(podstest.Pod(node, "default", "a", "10.244.1.2"))
	w := start(t, f, Config{})
	if got := lookupName(w, "10.244.1.2"); got != "default/a" {
		t.Errorf("Lookup = %q after a plain list", got)
	}
	if s := w.Stats(); s.Lists == 0 {
		t.Errorf("Stats %+v: no list", s)
	}
	f.Put(podstest.Pod(node, "default", "b", "10.244.1.3"))
	eventually(t, time.Second, "added pod", func() bool { return lookupName(w, "10.244.1.3") == "default/b" })
	var lists int
	for _, r := range f.RequestLog() {
		if !r.Watch {
			lists++
		}
	}
	if lists == 0 {
		t.Errorf("the server saw no list: %v", f.RequestLog())
	}
}

// TestUnauthorized: a wrong token never syncs; the error is counted and
// kept, and Run still ends with its context.
func TestUnauthorized(t *testing.T) {
	f := podstest.NewFakeAPI(t)
	w, err := New(Config{NodeName: node, Kubeconfig: f.Kubeconfig("wrong")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()
	eventually(t, 10*time.Second, "an error", func() bool { return w.Stats().Errors > 0 })
	s := w.Stats()
	if s.Synced || !strings.Contains(s.LastError, "Unauthorized") || s.LastErrorTime.IsZero() {
		t.Errorf("Stats %+v, want not synced and an Unauthorized error", s)
	}
	// Each refused request is one error, counted once.
	if s.Errors > s.Lists+s.Watches {
		t.Errorf("Stats %+v: more errors than requests", s)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if err := w.Run(context.Background()); err == nil {
		t.Error("a second Run did not fail")
	}
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no node", Config{Kubeconfig: "/nonexistent"}, "no node name"},
		{"missing kubeconfig", Config{NodeName: node, Kubeconfig: "/nonexistent/kubeconfig"}, "kubeconfig /nonexistent/kubeconfig"},
		{"negative resync", Config{NodeName: node, Kubeconfig: "/nonexistent", ResyncPeriod: -time.Second}, "negative resync"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error with %q", err, tc.want)
			}
		})
	}
	t.Run("not in a cluster", func(t *testing.T) {
		t.Setenv("KUBERNETES_SERVICE_HOST", "")
		t.Setenv("KUBERNETES_SERVICE_PORT", "")
		_, err := New(Config{NodeName: node})
		if err == nil || !strings.Contains(err.Error(), "in-cluster") {
			t.Errorf("New without a kubeconfig outside a cluster: %v", err)
		}
	})
}

// TestOnChangeConcurrent registers callbacks while the Watcher runs and
// looks up from many goroutines (for the race detector).
func TestOnChangeConcurrent(t *testing.T) {
	f := podstest.NewFakeAPI(t)
	w := start(t, f, Config{})
	var wg sync.WaitGroup
	var calls atomic.Int64
	for i := range 4 {
		wg.Go(func() {
			w.OnChange(func() { calls.Add(1) })
			for j := range 50 {
				w.Lookup(addrs("10.244.1.2"))
				w.Stats()
				if i == 0 && j%10 == 0 {
					f.Put(podstest.Pod(node, "default", "p", "10.244.1.2"))
				}
			}
		})
	}
	wg.Wait()
	f.Put(podstest.Pod(node, "default", "q", "10.244.1.3"))
	eventually(t, time.Second, "callbacks", func() bool { return calls.Load() >= 4 })
}

// TestIndexConflicts: two pods claiming one IP (an IP handed on while the
// old pod is still being deleted): the one not being deleted wins, then
// the newer, whatever the order they came in.
func TestIndexConflicts(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	mk := func(name string, created time.Time, deleting bool) *corev1.Pod {
		p := podstest.Pod(node, "default", name, "10.244.1.2")
		p.CreationTimestamp = metav1.NewTime(created)
		if deleting {
			now := metav1.NewTime(created.Add(time.Hour))
			p.DeletionTimestamp = &now
		}
		return p
	}
	for _, tc := range []struct {
		name string
		pods []*corev1.Pod
		want string
	}{
		{"deleting loses", []*corev1.Pod{mk("old", t0, false), mk("going", t0.Add(time.Minute), true)}, "old"},
		{"deleting loses, other order", []*corev1.Pod{mk("going", t0.Add(time.Minute), true), mk("old", t0, false)}, "old"},
		{"newer wins", []*corev1.Pod{mk("a", t0, false), mk("b", t0.Add(time.Second), false)}, "b"},
		{"newer wins, other order", []*corev1.Pod{mk("b", t0.Add(time.Second), false), mk("a", t0, false)}, "b"},
		{"same time: by name", []*corev1.Pod{mk("y", t0, false), mk("x", t0, false)}, "x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var x index
			x.init(node)
			for _, p := range tc.pods {
				x.set(p)
			}
			got, ok := x.lookup(addrs("10.244.1.2"))
			if !ok || got.Name != tc.want {
				t.Errorf("lookup = %q (%t), want %q", got.Name, ok, tc.want)
			}
			// Removing the winner leaves the other.
			x.delete("default/" + tc.want)
			got, ok = x.lookup(addrs("10.244.1.2"))
			if !ok || got.Name == tc.want {
				t.Errorf("after deleting %s: lookup = %q (%t), want the other pod", tc.want, got.Name, ok)
			}
			x.delete("default/" + got.Name)
			if _, ok := x.lookup(addrs("10.244.1.2")); ok || x.len() != 0 || len(x.byIP) != 0 {
				t.Errorf("index not empty after deleting both: %d pods, %d IPs", x.len(), len(x.byIP))
			}
		})
	}
}

func TestIndexSetReportsChanges(t *testing.T) {
	var x index
	x.init(node)
	p := podstest.Pod(node, "default", "a", "10.244.1.2")
	if !x.set(p) {
		t.Error("first set: no change")
	}
	if x.set(p.DeepCopy()) {
		t.Error("same pod again: a change")
	}
	q := p.DeepCopy()
	q.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	q.ResourceVersion = "9"
	if x.set(q) {
		t.Error("a condition and resourceVersion change: a change")
	}
	q.Labels = map[string]string{"app": "b"}
	if !x.set(q) {
		t.Error("new labels: no change")
	}
	q.Spec.NodeName = "worker-2" // cannot happen, but the index must not keep it
	if !x.set(q) || x.len() != 0 {
		t.Errorf("pod on another node kept: %d pods", x.len())
	}
	if x.delete("default/a") {
		t.Error("delete of an absent pod: a change")
	}
}

// TestSlim: the transform keeps what the index reads, drops the rest, and
// is idempotent.
func TestSlim(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	p := podstest.Pod(node, "default", "a", "10.244.1.2", "fd00::2")
	p.UID = "u"
	p.ResourceVersion = "7"
	p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}
	p.Annotations = map[string]string{"big": strings.Repeat("x", 1000)}
	p.Spec.InitContainers = []corev1.Container{{Name: "mesh", RestartPolicy: &always, Image: "mesh:1"}, {Name: "migrate"}}
	p.Spec.Volumes = []corev1.Volume{{Name: "data"}}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady}}
	once, err := slim(p)
	if err != nil {
		t.Fatal(err)
	}
	s := once.(*corev1.Pod)
	if s.ManagedFields != nil || s.Annotations != nil || s.Spec.Volumes != nil || s.Status.Conditions != nil ||
		s.Spec.Containers[0].Image != "" || len(s.Spec.InitContainers) != 1 {
		t.Errorf("slim kept too much: %+v", s)
	}
	var a, b index
	a.init(node)
	b.init(node)
	a.set(p)
	b.set(s)
	if diff := cmp.Diff(a.pods["default/a"].pod, b.pods["default/a"].pod); diff != "" {
		t.Errorf("index entry of the slim pod differs (-full +slim):\n%s", diff)
	}
	twice, _ := slim(s)
	if diff := cmp.Diff(s, twice); diff != "" {
		t.Errorf("slim is not idempotent (-once +twice):\n%s", diff)
	}
	if other, _ := slim("not a pod"); other != "not a pod" {
		t.Errorf("slim changed a non-pod: %v", other)
	}
}

// BenchmarkLookup: one namespace's addresses against a node's worth of
// pods.
func BenchmarkLookup(b *testing.B) {
	var x index
	x.init(node)
	for i := range 250 {
		x.set(podstest.Pod(node, "default", "p"+strconv.Itoa(i), "10.244."+strconv.Itoa(i/250)+"."+strconv.Itoa(i%250+1)))
	}
	a := addrs("127.0.0.1", "10.244.0.200", "fd00::200")
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := x.lookup(a); !ok {
			b.Fatal("not found")
		}
	}
}

// BenchmarkSyncMemory reports the heap a Watcher holds per pod of the node
// once synced (the informer's slim cache, the index, the client), for pods
// the size real ones are (managed fields, several containers with env).
func BenchmarkSyncMemory(b *testing.B) {
	const n = 250
	for b.Loop() {
		b.StopTimer()
		f := podstest.NewFakeAPI(b)
		for i := range n {
			p := podstest.Pod(node, "default", "p"+strconv.Itoa(i), "10.244.0."+strconv.Itoa(i%250+1))
			for c := range 3 {
				ctr := corev1.Container{Name: "c" + strconv.Itoa(c), Image: "registry.example/app:" + strconv.Itoa(c)}
				for e := range 10 {
					ctr.Env = append(ctr.Env, corev1.EnvVar{Name: "VAR_" + strconv.Itoa(e), Value: strings.Repeat("v", 40)})
				}
				p.Spec.Containers = append(p.Spec.Containers, ctr)
			}
			p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet", Operation: "Update", FieldsV1: metav1.NewFieldsV1(`{"f:status":{"f:conditions":{}}}`)}}
			f.Put(p)
		}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		w, err := New(Config{NodeName: node, Kubeconfig: f.Kubeconfig(f.Token)})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { w.Run(ctx); close(done) }()
		for !w.Synced() {
			time.Sleep(5 * time.Millisecond)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/n, "heapB/pod")
		if w.Stats().Pods != n {
			b.Fatalf("%d pods indexed, want %d", w.Stats().Pods, n)
		}
		cancel()
		<-done
		b.StartTimer()
	}
}

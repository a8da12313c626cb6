package pods

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/siftr-probe/siftr-probe/internal/buildinfo"
)

// Pod is what a record says of the pod a network namespace belongs to.
type Pod struct {
	// Namespace and Name are the pod's Kubernetes namespace and name.
	Namespace, Name string
	// UID is the pod's metadata.uid.
	UID string
	// Container is the name of the pod's only container, or empty when it
	// has several (native sidecars, init containers that keep running,
	// count; init containers that ran to completion do not).
	Container string
	// Labels are the pod's labels. The map is shared: do not modify it.
	Labels map[string]string
}

// Config says which node's pods to watch and how to reach the API server.
type Config struct {
	// NodeName is this node's name as the API server knows it (its pods'
	// spec.nodeName); in a pod, from the downward API (an environment
	// variable such as NODE_NAME from fieldRef spec.nodeName). Required.
	NodeName string
	// Kubeconfig is a kubeconfig file to reach the API server with (its
	// current context). Empty: in-cluster, with the pod's service account
	// token and KUBERNETES_SERVICE_HOST and _PORT.
	Kubeconfig string
	// ResyncPeriod, if non-zero, re-delivers every pod of the cache this
	// often, so a change missed would be seen then; OnChange is not called
	// when nothing changed. 0 (the default) relies on the watch, which
	// delivers every change; when it cannot resume, the client lists again.
	ResyncPeriod time.Duration
}

// Stats counts the Watcher's requests to the API server. Its fields are
// copies, safe to keep.
type Stats struct {
	// Pods is the number of pods in the index: on this node, not
	// hostNetwork, not finished, with at least one IP.
	Pods int
	// Synced is Synced().
	Synced bool
	// Lists and Watches count list and watch requests. The first sync is
	// one streaming watch (or a list, from an API server without
	// streaming lists); every reconnection is one more watch, and one
	// more list when the watch could not resume.
	Lists, Watches uint64
	// Errors counts failed list and watch requests and watches that ended
	// with an error event; the client retries them by itself.
	Errors uint64
	// LastError is the latest of those errors, with its time; empty if none.
	LastError     string
	LastErrorTime time.Time
}

// Watcher keeps the pods of one node, indexed by IP. Create it with New and
// start it with Run.
type Watcher struct {
	cfg      Config
	client   rest.Interface
	informer cache.SharedIndexInformer
	reg      cache.ResourceEventHandlerRegistration
	started  atomic.Bool
	index    index

	// changed has room for one signal: index changes coalesce until the
	// notifier goroutine of Run takes it.
	changed chan struct{}
	cbMu    sync.Mutex // guards callbacks
	cbs     []func()

	lists, watches, errs atomic.Uint64
	errMu                sync.Mutex // guards lastErr, lastErrTime
	lastErr              string
	lastErrTime          time.Time
}

// New returns a Watcher for the pods of cfg.NodeName. It reads the
// kubeconfig or the in-cluster configuration, but does not contact the API
// server: Run does.
func New(cfg Config) (*Watcher, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("pods: no node name (set it from the downward API: fieldRef spec.nodeName)")
	}
	if cfg.ResyncPeriod < 0 {
		return nil, fmt.Errorf("pods: negative resync period %v", cfg.ResyncPeriod)
	}
	var rc *rest.Config
	var err error
	if cfg.Kubeconfig == "" {
		rc, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("pods: in-cluster configuration: %w", err)
		}
	} else {
		rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("pods: kubeconfig %s: %w", cfg.Kubeconfig, err)
		}
	}
	client, err := restClient(rc)
	if err != nil {
		return nil, fmt.Errorf("pods: API client: %w", err)
	}
	w := &Watcher{
		cfg:     cfg,
		client:  client,
		changed: make(chan struct{}, 1),
	}
	w.index.init(cfg.NodeName)

	w.informer = cache.NewSharedIndexInformerWithOptions(w.listWatch(), &corev1.Pod{},
		cache.SharedIndexInformerOptions{ResyncPeriod: cfg.ResyncPeriod, ObjectDescription: "pods on node " + cfg.NodeName})
	if err := w.informer.SetTransform(slim); err != nil {
		return nil, fmt.Errorf("pods: %w", err)
	}
	// The list and watch functions record every failed request and error
	// event; the default handler would only log them again.
	if err := w.informer.SetWatchErrorHandlerWithContext(func(context.Context, *cache.Reflector, error) {}); err != nil {
		return nil, fmt.Errorf("pods: %w", err)
	}
	discard := logr.Discard()
	w.reg, err = w.informer.AddEventHandlerWithOptions(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.update(obj) },
		UpdateFunc: func(_, obj any) { w.update(obj) },
		DeleteFunc: func(obj any) { w.remove(obj) },
	}, cache.HandlerOptions{Logger: &discard})
	if err != nil {
		return nil, fmt.Errorf("pods: %w", err)
	}
	return w, nil
}

// restClient is a client for core/v1 pods alone, not a kubernetes.Clientset,
// which would link the types and clients of every API group: its scheme
// knows Pod and PodList (and the meta types) only.
func restClient(rc *rest.Config) (*rest.RESTClient, error) {
	scheme := runtime.NewScheme()
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
	scheme.AddKnownTypes(corev1.SchemeGroupVersion, &corev1.Pod{}, &corev1.PodList{})
	metav1.AddToGroupVersion(scheme, corev1.SchemeGroupVersion)
	c := rest.CopyConfig(rc)
	c.GroupVersion = &corev1.SchemeGroupVersion
	c.APIPath = "/api"
	c.ContentType = runtime.ContentTypeJSON
	c.AcceptContentTypes = runtime.ContentTypeJSON
	c.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	c.UserAgent = "siftr-probe/" + buildinfo.Get().Version
	c.WarningHandler = rest.NoWarnings{}
	return rest.RESTClientFor(c)
}

// listWatch lists and watches the pods of the node, counting requests.
func (w *Watcher) listWatch() *cache.ListWatch {
	sel := fields.OneTermEqualSelector("spec.nodeName", w.cfg.NodeName).String()
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			w.lists.Add(1)
			opts.FieldSelector = sel
			list := &corev1.PodList{}
			err := w.client.Get().Resource("pods").VersionedParams(&opts, metav1.ParameterCodec).Do(ctx).Into(list)
			if err != nil {
				w.recordError(fmt.Errorf("list pods: %w", err))
				return nil, err
			}
			return list, nil
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			w.watches.Add(1)
			opts.FieldSelector = sel
			opts.Watch = true
			wi, err := w.client.Get().Resource("pods").VersionedParams(&opts, metav1.ParameterCodec).Watch(ctx)
			if err != nil {
				w.recordError(fmt.Errorf("watch pods: %w", err))
				return nil, err
			}
			return newCountingWatch(wi, w.recordError), nil
		},
	}
}

// countingWatch passes a watch's events on and records its error events
// (a 410 Expired when the watch cannot resume, for one), except those that
// follow Stop (the client's own report of the stream it closed).
type countingWatch struct {
	in     watch.Interface
	result chan watch.Event
	done   chan struct{}
	once   sync.Once
}

func newCountingWatch(in watch.Interface, record func(error)) *countingWatch {
	c := &countingWatch{in: in, result: make(chan watch.Event), done: make(chan struct{})}
	go func() {
		defer close(c.result)
		for e := range in.ResultChan() {
			select {
			case <-c.done:
				continue // drain until in closes its channel
			default:
			}
			if e.Type == watch.Error {
				if st, ok := e.Object.(*metav1.Status); ok {
					record(fmt.Errorf("watch pods: %s (%d %s)", st.Message, st.Code, st.Reason))
				} else {
					record(errors.New("watch pods: error event"))
				}
			}
			select {
			case c.result <- e:
			case <-c.done:
			}
		}
	}()
	return c
}

func (c *countingWatch) ResultChan() <-chan watch.Event { return c.result }

func (c *countingWatch) Stop() {
	c.once.Do(func() { close(c.done) })
	c.in.Stop()
}

func (w *Watcher) recordError(err error) {
	w.errs.Add(1)
	w.errMu.Lock()
	w.lastErr, w.lastErrTime = err.Error(), time.Now()
	w.errMu.Unlock()
}

// Run lists and watches the node's pods until ctx is done, reconnecting by
// itself (with backoff) when the API server closes the watch or cannot be
// reached, and calls the OnChange functions when the index changes. It
// returns nil once ctx is done and its goroutines have ended, or an error
// if Run was called before.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return errors.New("pods: Run called twice")
	}
	ctx = klog.NewContext(ctx, logr.Discard())
	var wg sync.WaitGroup
	wg.Go(func() { w.notify(ctx) })
	w.informer.RunWithContext(ctx)
	wg.Wait()
	return nil
}

// notify calls the OnChange functions after each batch of index changes.
func (w *Watcher) notify(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.changed:
		}
		w.cbMu.Lock()
		cbs := w.cbs
		w.cbMu.Unlock()
		for _, f := range cbs {
			f()
		}
	}
}

// Synced reports whether the first list of the node's pods is in the index.
// Before that, Lookup may miss pods that exist.
func (w *Watcher) Synced() bool { return w.reg.HasSynced() }

// Lookup returns the pod, on this node and not hostNetwork, one of whose
// IPs (status.podIPs) is among addrs: the addresses of a network namespace.
// Loopback and link-local addresses never match. IPv4-mapped IPv6
// addresses match as IPv4, zones are ignored.
func (w *Watcher) Lookup(addrs []netip.Addr) (Pod, bool) { return w.index.lookup(addrs) }

// OnChange registers f to be called after the index changed: a pod of the
// node got, changed or lost an IP, its labels or its containers, or went.
// Bursts (the first list) are coalesced into one call. Calls are made one at
// a time from Run's goroutine, so f must not block for long; f is not called
// after Run returns.
func (w *Watcher) OnChange(f func()) {
	w.cbMu.Lock()
	w.cbs = append(w.cbs[:len(w.cbs):len(w.cbs)], f)
	w.cbMu.Unlock()
}

// Stats returns the counts so far.
func (w *Watcher) Stats() Stats {
	s := Stats{
		Pods:    w.index.len(),
		Synced:  w.Synced(),
		Lists:   w.lists.Load(),
		Watches: w.watches.Load(),
		Errors:  w.errs.Load(),
	}
	w.errMu.Lock()
	s.LastError, s.LastErrorTime = w.lastErr, w.lastErrTime
	w.errMu.Unlock()
	return s
}

func (w *Watcher) update(obj any) {
	if p, ok := obj.(*corev1.Pod); ok && w.index.set(p) {
		w.signal()
	}
}

func (w *Watcher) remove(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err == nil && w.index.delete(key) {
		w.signal()
	}
}

func (w *Watcher) signal() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// Package podstest is a stand-in for the Kubernetes API server's pods
// endpoint, for the tests of internal/pods and of its users.
package podstest

import (
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
)

// FakeAPI is a stand-in for the Kubernetes API server's pods endpoint,
// /api/v1/pods, over TLS with a bearer token, in JSON as the real one
// serves it: lists (kind PodList with the list's resourceVersion), watches
// from a resourceVersion (newline-delimited watch events; an ERROR event
// with a 410 Expired Status when that version was compacted away),
// streaming lists (sendInitialEvents=true: ADDED events for every pod, then
// a BOOKMARK annotated k8s.io/initial-events-end), field selectors on
// spec.nodeName, metadata.name and metadata.namespace, and 401 for a wrong
// token.
type FakeAPI struct {
	t     testing.TB
	srv   *httptest.Server
	Token string // the bearer token it accepts

	mu        sync.Mutex
	rv        int                    // the latest resourceVersion
	compacted int                    // watches from before this version get 410
	pods      map[string]*corev1.Pod // by namespace/name
	log       []event                // every change, in order
	cond      *sync.Cond             // broadcast on every change and on closeWatches
	epoch     int                    // bumped by closeWatches
	noStream  bool                   // reject sendInitialEvents, as API servers before streaming lists do
	requests  []Request

	wg sync.WaitGroup // active watch handlers
}

// Request is a list or watch the server was asked for.
type Request struct {
	Watch           bool
	FieldSelector   string
	ResourceVersion string
	InitialEvents   bool // sendInitialEvents=true: a streaming list
}

type event struct {
	typ string
	pod *corev1.Pod
	rv  int
}

func NewFakeAPI(t testing.TB) *FakeAPI {
	t.Helper()
	f := &FakeAPI{t: t, Token: "secret-token", rv: 100, pods: map[string]*corev1.Pod{}}
	f.cond = sync.NewCond(&f.mu)
	f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(func() {
		f.CloseWatches()
		f.srv.CloseClientConnections()
		f.srv.Close()
		f.wg.Wait()
	})
	return f
}

// kubeconfig writes a kubeconfig for the server and returns its path.
func (f *FakeAPI) Kubeconfig(token string) string {
	f.t.Helper()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: probe
  user:
    token: %s
contexts:
- name: fake
  context: {cluster: fake, user: probe}
current-context: fake
`, f.srv.URL, base64.StdEncoding.EncodeToString(ca), token)
	path := filepath.Join(f.t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		f.t.Fatal(err)
	}
	return path
}

// put adds or replaces a pod (ADDED or MODIFIED).
func (f *FakeAPI) Put(p *corev1.Pod) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p = p.DeepCopy()
	key := p.Namespace + "/" + p.Name
	typ := "MODIFIED"
	if old, ok := f.pods[key]; !ok {
		typ = "ADDED"
		if p.UID == "" {
			p.UID = types.UID(fmt.Sprintf("uid-%s-%d", p.Name, f.rv+1))
		}
		if p.CreationTimestamp.IsZero() {
			p.CreationTimestamp = metav1.NewTime(time.Now().Truncate(time.Second))
		}
	} else {
		p.UID, p.CreationTimestamp = old.UID, old.CreationTimestamp
	}
	f.rv++
	p.ResourceVersion = strconv.Itoa(f.rv)
	f.pods[key] = p
	f.log = append(f.log, event{typ, p, f.rv})
	f.cond.Broadcast()
}

// remove deletes a pod (DELETED).
func (f *FakeAPI) Remove(namespace, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removeLocked(namespace, name)
}

func (f *FakeAPI) removeLocked(namespace, name string) {
	key := namespace + "/" + name
	p, ok := f.pods[key]
	if !ok {
		f.t.Fatalf("fake API: no pod %s", key)
	}
	delete(f.pods, key)
	f.rv++
	p = p.DeepCopy()
	p.ResourceVersion = strconv.Itoa(f.rv)
	f.log = append(f.log, event{"DELETED", p, f.rv})
	f.cond.Broadcast()
}

// closeWatches ends every open watch from the server's side.
func (f *FakeAPI) CloseWatches() {
	f.mu.Lock()
	f.epoch++
	f.cond.Broadcast()
	f.mu.Unlock()
}

// removeCompacted deletes a pod and compacts the change log at once, as if
// the deletion happened long enough ago for its event to be gone: a watch
// that has not sent it, open or resumed, gets 410 Expired, and the client
// must list again to learn of it.
func (f *FakeAPI) RemoveCompacted(namespace, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removeLocked(namespace, name)
	f.compacted = f.rv
	f.log = nil
}

func (f *FakeAPI) SetNoStreaming(v bool) {
	f.mu.Lock()
	f.noStream = v
	f.mu.Unlock()
}

func (f *FakeAPI) RequestLog() []Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Request(nil), f.requests...)
}

func (f *FakeAPI) status(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	st := metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Message: msg, Reason: reason, Code: int32(code),
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(st)
}

func (f *FakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+f.Token {
		f.status(w, http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "Unauthorized")
		return
	}
	if r.Method != http.MethodGet || r.URL.Path != "/api/v1/pods" {
		f.status(w, http.StatusNotFound, metav1.StatusReasonNotFound, "the server could not find the requested resource")
		return
	}
	q := r.URL.Query()
	sel, err := fields.ParseSelector(q.Get("fieldSelector"))
	if err != nil {
		f.status(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
		return
	}
	for _, req := range sel.Requirements() {
		switch req.Field {
		case "spec.nodeName", "metadata.name", "metadata.namespace":
		default:
			f.status(w, http.StatusBadRequest, metav1.StatusReasonBadRequest,
				fmt.Sprintf("field label not supported: %s", req.Field))
			return
		}
	}
	if q.Get("watch") == "true" || q.Get("watch") == "1" {
		f.watch(w, r, sel)
		return
	}
	f.mu.Lock()
	f.requests = append(f.requests, Request{FieldSelector: q.Get("fieldSelector"), ResourceVersion: q.Get("resourceVersion")})
	list := corev1.PodList{
		TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"},
		ListMeta: metav1.ListMeta{ResourceVersion: strconv.Itoa(f.rv)},
		Items:    []corev1.Pod{},
	}
	for _, p := range f.pods {
		if matches(sel, p) {
			list.Items = append(list.Items, *p)
		}
	}
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(list)
}

func matches(sel fields.Selector, p *corev1.Pod) bool {
	return sel.Matches(fields.Set{"spec.nodeName": p.Spec.NodeName, "metadata.name": p.Name, "metadata.namespace": p.Namespace})
}

func (f *FakeAPI) watch(w http.ResponseWriter, r *http.Request, sel fields.Selector) {
	f.wg.Add(1)
	defer f.wg.Done()
	q := r.URL.Query()
	initial := q.Get("sendInitialEvents") == "true"

	f.mu.Lock()
	f.requests = append(f.requests, Request{Watch: true, FieldSelector: q.Get("fieldSelector"), ResourceVersion: q.Get("resourceVersion"), InitialEvents: initial})
	if initial && f.noStream {
		f.mu.Unlock()
		// What an API server without the WatchList feature answers.
		f.status(w, http.StatusUnprocessableEntity, metav1.StatusReasonInvalid,
			`ListOptions.meta.k8s.io "" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled`)
		return
	}
	from := 0
	if v := q.Get("resourceVersion"); v != "" && v != "0" {
		n, err := strconv.Atoi(v)
		if err != nil {
			f.mu.Unlock()
			f.status(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, "invalid resourceVersion "+v)
			return
		}
		from = n
	}
	epoch := f.epoch
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Transfer-Encoding", "chunked")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	send := func(typ string, obj any) bool {
		if err := enc.Encode(map[string]any{"type": typ, "object": obj}); err != nil {
			return false
		}
		w.(http.Flusher).Flush()
		return true
	}
	withKind := func(p *corev1.Pod) *corev1.Pod {
		p = p.DeepCopy()
		p.TypeMeta = metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}
		return p
	}

	sent := from // the resourceVersion the client has seen
	switch {
	case from == 0 || initial:
		// Synthetic ADDED events for the current state (for a watch from
		// "" or "0", or a streaming list), then changes after it.
		for _, p := range f.pods {
			if matches(sel, p) && !send("ADDED", withKind(p)) {
				f.mu.Unlock()
				return
			}
		}
		if initial {
			bm := &corev1.Pod{
				TypeMeta:   metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
				ObjectMeta: metav1.ObjectMeta{ResourceVersion: strconv.Itoa(f.rv), Annotations: map[string]string{metav1.InitialEventsAnnotationKey: "true"}},
			}
			if !send("BOOKMARK", bm) {
				f.mu.Unlock()
				return
			}
		}
		sent = f.rv
	}

	// Wake the wait below when the client goes away.
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-r.Context().Done():
			f.mu.Lock()
			f.cond.Broadcast()
			f.mu.Unlock()
		case <-done:
		}
	}()
	for {
		if sent < f.compacted {
			// Changes this watch has not sent are gone.
			compacted := f.compacted
			f.mu.Unlock()
			send("ERROR", metav1.Status{
				TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
				Status:   metav1.StatusFailure, Code: http.StatusGone, Reason: metav1.StatusReasonExpired,
				Message: fmt.Sprintf("too old resource version: %d (%d)", sent, compacted),
			})
			return
		}
		for _, e := range f.log {
			if e.rv <= sent {
				continue
			}
			sent = e.rv
			if matches(sel, e.pod) && !send(e.typ, withKind(e.pod)) {
				f.mu.Unlock()
				return
			}
		}
		if f.epoch != epoch || r.Context().Err() != nil {
			f.mu.Unlock()
			return
		}
		f.cond.Wait()
	}
}

// Pod is a pod on node with one container and the given IPs.
func Pod(node, namespace, name string, ips ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "main", Image: "registry.example/app:1"}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	SetIPs(p, ips...)
	return p
}

// SetIPs sets a pod's status IPs.
func SetIPs(p *corev1.Pod, ips ...string) {
	p.Status.PodIP, p.Status.PodIPs = "", nil
	for i, ip := range ips {
		if i == 0 {
			p.Status.PodIP = ip
		}
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
}

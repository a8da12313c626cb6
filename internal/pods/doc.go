// Package pods tells which Kubernetes pod a network namespace belongs to.
//
// A Watcher lists and watches the pods scheduled on one node (an informer
// restricted by the field selector spec.nodeName=NODE, so memory follows
// the pods on the node, not the cluster) through the API server, and keeps
// an index from pod IP (status.podIPs) to pod. A namespace is matched to
// its pod by the addresses it holds: Lookup takes the addresses read from
// inside the namespace (Addrs does that) and returns the pod, on this node
// and not hostNetwork, one of whose IPs is among them.
//
// Why the API server and not the container runtime (CRI): the API server
// speaks one protocol on every node whatever the runtime (containerd,
// CRI-O, cri-dockerd), needs only a read-only RBAC grant (get, list, watch
// on pods) rather than the runtime's socket, which lets its holder start
// privileged containers, and pushes every change as a watch event, where
// CRI has no sandbox watch and would be polled. CRI does name a sandbox's
// namespace path, but only in the runtime-specific verbose info (containerd
// and CRI-O differ), not in the CRI messages themselves. Cilium's agent and
// Inspektor Gadget's pod informer watch the API server for the pods of
// their node the same way (field selector spec.nodeName), and Retina keeps
// its IP-to-pod cache from the API server; kubeskoop polls CRI every few
// seconds, with a special case for Docker.
//
// What matching by address means: a pod's IPs are in its status once the
// runtime has set up its network, a second or so after the namespace
// exists, so a namespace can be unknown for a moment; OnChange says when
// the answer may have changed. Pods that finished (Succeeded, Failed) are
// left out, as their IPs can already belong to a new pod; if two pods claim
// one IP, the one not being deleted wins, then the newer one.
//
// # Concurrency
//
// Run once; Synced, Lookup, OnChange and Stats are safe for concurrent use,
// before, during and after Run.
//
// # Privileges
//
// Watching needs a service account (or kubeconfig) allowed to get, list
// and watch pods cluster-wide; nothing on the node. Addrs enters a
// namespace, which needs CAP_SYS_ADMIN (and CAP_SYS_PTRACE for
// /proc/PID/ns/net of another user's process).
//
// The package does not log: the Kubernetes client's logs are discarded, and
// errors (failed lists and watches; the client reconnects by itself, with
// backoff) are counted in Stats with the last one kept.
package pods

// Package metrics turns the pipeline's counters into Prometheus metrics and
// serves them, with a health check, over HTTP.
//
// The pipeline packages (capture, correlate, diag, output) know nothing of
// Prometheus: they count in plain Stats structs. A Collector reads them
// through a caller-supplied function on every scrape and builds constant
// metrics from them, as node_exporter's collectors do, so the hot path pays
// nothing for metrics and a scrape always sees current values.
//
// Every metric is named siftr_*. A Server registers the Collector on a
// private registry, together with the Go runtime and process collectors
// (go_*, process_*); nothing is registered on the global default registry.
//
// # HTTP endpoints
//
//	/metrics  Prometheus text or protobuf exposition
//	/healthz  200 "ok" while healthy, 503 and the reason otherwise
//
// # Concurrency
//
// A Collector may be scraped concurrently: its read function must be safe
// for concurrent use. Server methods are safe for concurrent use.
//
// # Network namespaces
//
// The listener lives in the namespace of the thread that calls
// net.Listen: siftr-probe listens in its own namespace also when it
// captures in another one with --netns, so that the node's kubelet and
// Prometheus reach it.
package metrics

// Package ctl is siftr-probe's control protocol: how `siftr-probe ctl`
// changes a running probe, as FreeBSD's sysctls change SIFTR
// (net.inet.siftr.enabled, ppl, port_filter, logfile).
//
// The probe listens on a Unix stream socket (Listen). A client connects,
// writes one request per line, a JSON object, and reads one response per
// line, a JSON object, for each; it may send several requests on one
// connection, in turn. Every request and response carries the protocol
// version, "v": Version. A request of another version is answered with an
// error (and the version the probe speaks), so that a client and a probe
// of different releases fail clearly. The requests:
//
//	{"v":1,"cmd":"status"}
//	{"v":1,"cmd":"stats"}
//	{"v":1,"cmd":"enable"}
//	{"v":1,"cmd":"disable"}
//	{"v":1,"cmd":"set","name":"ppl","value":"10"}
//	{"v":1,"cmd":"set","name":"port","value":"5201"}
//	{"v":1,"cmd":"set","name":"logfile","value":"/var/log/siftr.2.log"}
//
// A response has "ok" true and what the command returns (Response), or
// "ok" false, a one-line "error" and the exit status the command line
// client uses for it ("exit": 2 for a bad request or a setting that cannot
// be used, nothing changed; 1 for a change that failed while running).
// README.md documents the fields.
//
// # Security
//
// The socket is made with mode 0600, owned by the user the probe runs as,
// and never through a symbolic link; a stale socket of a run that ended
// without removing it (killed) is replaced, a live one is not. Every
// connection's peer credentials (SO_PEERCRED) are checked: only root and
// the probe's own user may send requests, others get one error response
// and the connection is closed.
//
// # Concurrency
//
// A Listener serves each connection on a goroutine of its own and may
// call the Handler concurrently; the Handler serializes what must be.
// Close stops serving and waits for every goroutine.
package ctl

import (
	"encoding/json"
	"time"
)

// Version is the protocol version this package speaks.
const Version = 1

// DefaultPath is where the probe listens unless told otherwise.
const DefaultPath = "/run/siftr-probe/ctl"

// MaxLine bounds a request or response line, in bytes.
const MaxLine = 1 << 20

// Commands (Request.Cmd).
const (
	CmdStatus  = "status"
	CmdStats   = "stats"
	CmdEnable  = "enable"
	CmdDisable = "disable"
	CmdSet     = "set"
)

// Settings a set request changes (Request.Name).
const (
	SetPPL     = "ppl"
	SetPort    = "port"
	SetLogFile = "logfile"
)

// Request is one request line.
type Request struct {
	V     int    `json:"v"`
	Cmd   string `json:"cmd"`
	Name  string `json:"name,omitempty"`  // set: the setting
	Value string `json:"value,omitempty"` // set: its new value, as on the command line
}

// Response is one response line.
type Response struct {
	V  int  `json:"v"`
	OK bool `json:"ok"`
	// Error is a one-line message when OK is false; Exit is then the
	// command line client's exit status (2 or 1).
	Error string `json:"error,omitempty"`
	Exit  int    `json:"exit,omitempty"`
	// Message says in one line what the command did (enable, disable,
	// set), or that there was nothing to do.
	Message string `json:"message,omitempty"`
	// Status is the probe's state after the command (every command).
	Status *Status `json:"status,omitempty"`
	// Change is what a set command changed.
	Change *Change `json:"change,omitempty"`
	// Summary is, for stats, the summary the probe prints at exit, for the
	// current cycle so far (or the last one, while disabled); for disable,
	// that of the cycle it ended.
	Summary string `json:"summary,omitempty"`
}

// Status is what the probe is doing.
type Status struct {
	Enabled bool   `json:"enabled"`
	State   string `json:"state"` // the state source: diag or exact
	Iface   string `json:"iface"`
	NetNS   string `json:"netns,omitempty"`
	PPL     uint32 `json:"ppl"`
	Port    uint16 `json:"port"` // 0: all ports
	LogFile string `json:"logfile"`
	Format  string `json:"format"`
	// Started is when the probe started; Uptime how long ago, in seconds.
	Started time.Time `json:"started"`
	Uptime  float64   `json:"uptime_s"`
	// Cycle is the number of logging cycles (enable to disable) begun;
	// the fields below are of the current one or, while disabled, the
	// last one. CycleEnd is zero while it runs.
	Cycle      int       `json:"cycle"`
	CycleStart time.Time `json:"cycle_start,omitzero"`
	CycleEnd   time.Time `json:"cycle_end,omitzero"`
	Counts     *Counts   `json:"counts,omitempty"`
}

// Counts are a cycle's counters, per direction ([inbound, outbound]):
// SIFTR's, as the disable line has them, and what sampling did.
type Counts struct {
	Packets    [2]uint64 `json:"packets"`
	SampledOut [2]uint64 `json:"sampled_out"`
	// Sampled are the packets sampling kept: each became a data line or
	// was skipped once its socket's state was known (diag mode's lookups,
	// a full queue).
	Sampled    [2]uint64 `json:"sampled"`
	SkipMalloc [2]uint64 `json:"skipped_malloc"`
	SkipTCPCB  [2]uint64 `json:"skipped_tcpcb"`
	SkipInPCB  [2]uint64 `json:"skipped_inpcb"`
	// FlowTableFull and QueueFull are the malloc skips of packets the flow
	// table refused and of records the writer's queue refused.
	FlowTableFull uint64 `json:"flow_table_full"`
	QueueFull     uint64 `json:"queue_full"`
	Lines         uint64 `json:"lines"`        // data lines written
	Flows         int64  `json:"active_flows"` // flows in the flow table
}

// Change is what a set command changed.
type Change struct {
	Name string    `json:"name"`
	Old  string    `json:"old"`
	New  string    `json:"new"`
	Time time.Time `json:"time"`
	// Before are, for ppl and port changed while enabled, the cycle's
	// packets, sampled out and sampled ones up to the change: every packet
	// in them was sampled under the old setting, every later one under the
	// new (Counts' other fields are 0).
	Before *Counts `json:"before,omitempty"`
}

// Error responses' exit statuses.
const (
	ExitFailed = 1 // a change failed while running
	ExitUsage  = 2 // a bad request or setting: nothing changed
)

// Errorf returns an error response.
func Errorf(exit int, msg string) *Response {
	return &Response{V: Version, Error: msg, Exit: exit}
}

func encode(r *Response) []byte {
	b, err := json.Marshal(r)
	if err != nil {
		b, _ = json.Marshal(Errorf(ExitFailed, "encode response: "+err.Error()))
	}
	return append(b, '\n')
}

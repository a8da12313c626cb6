package probe

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/siftr-probe/siftr-probe/capture"
	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/diag"
	"github.com/siftr-probe/siftr-probe/exact"
	"github.com/siftr-probe/siftr-probe/output"
)

// Report is the machine-readable form of a Summary (--stats-file): of the
// last logging cycle of the run.
type Report struct {
	Start           time.Time              `json:"start"`
	End             time.Time              `json:"end"`
	Seconds         float64                `json:"seconds"`
	LogFile         string                 `json:"logfile"`
	PcapFile        string                 `json:"pcap_file,omitempty"`
	State           string                 `json:"state"`
	Cycle           int                    `json:"cycle"` // the logging cycle reported, from 1; 0: none ran
	PPL             uint32                 `json:"ppl"`   // the settings at the end
	Port            uint16                 `json:"port"`
	Lines           uint64                 `json:"lines"`
	Counts          correlate.Counts       `json:"counts"`
	Capture         capture.Stats          `json:"capture"`
	Engine          correlate.Stats        `json:"engine"`
	Resolve         correlate.ResolveStats `json:"resolve"`
	Diag            diag.Stats             `json:"diag"`
	Exact           exact.Stats            `json:"exact"`
	Writer          writerReport           `json:"writer"`
	Pcap            *output.PcapStats      `json:"pcap,omitempty"`
	StalenessNS     map[string]int64       `json:"staleness_ns"`
	LookupsPerBatch float64                `json:"lookups_per_batch"`
	Process         map[string]uint64      `json:"process"`
	// NetNS is --all-netns's breakdown: one entry per followed namespace
	// and interface, those that went away included (ended).
	NetNS          []netnsReport `json:"netns,omitempty"`
	NetNSBeyondMax uint64        `json:"netns_beyond_max,omitempty"`
	// ClockSteps counts the steps of the wall clock during the run;
	// LastClockStepNS is the latest one's size (> 0 forward).
	ClockSteps      uint64 `json:"clock_steps"`
	LastClockStepNS int64  `json:"last_clock_step_ns,omitempty"`
}

type netnsReport struct {
	Inode        uint64           `json:"inode"`
	Name         string           `json:"name,omitempty"`
	PodNamespace string           `json:"pod_namespace,omitempty"`
	Pod          string           `json:"pod,omitempty"`
	Iface        string           `json:"iface"`
	Ended        bool             `json:"ended"`
	Counts       correlate.Counts `json:"counts"`
}

type writerReport struct {
	Records, Bytes, Rejected, Forced, Late, WriteErrors, LostToWriteError uint64
}

// Report builds the machine-readable summary, with this process's CPU time
// and peak RSS so far.
func (s *Summary) Report() *Report {
	r := &Report{
		Start: s.Start, End: s.End, Seconds: s.End.Sub(s.Start).Seconds(), LogFile: s.LogFile,
		Cycle: s.Cycle, PPL: s.PPL, Port: s.Port,
		Lines: s.Writer.Records, Counts: s.Counts, Capture: s.Capture, Engine: s.Engine, Resolve: s.Resolve, Diag: s.Diag, Exact: s.Exact, State: s.State,
		Writer: writerReport{s.Writer.Records, s.Writer.Bytes, s.Writer.Rejected, s.Writer.Forced,
			s.Writer.Late, s.Writer.WriteErrors, s.Writer.LostToWriteError},
		StalenessNS: map[string]int64{},
		Process:     map[string]uint64{},
		PcapFile:    s.PcapFile,
	}
	for _, n := range s.NetNS {
		r.NetNS = append(r.NetNS, netnsReport{Inode: n.Origin.NetNS, Name: n.Origin.NetNSName,
			PodNamespace: n.Origin.PodNamespace, Pod: n.Origin.PodName, Iface: n.Iface, Ended: n.Ended, Counts: n.Counts})
	}
	r.NetNSBeyondMax = s.NetNSBeyondMax
	r.ClockSteps, r.LastClockStepNS = s.ClockSteps.Steps, int64(s.ClockSteps.Last)
	if s.PcapFile != "" {
		pc := s.Writer.Pcap
		r.Pcap = &pc
	}
	st := s.Writer.Staleness
	for name, q := range map[string]float64{"p50": 0.5, "p90": 0.9, "p99": 0.99, "p999": 0.999, "max": 1} {
		r.StalenessNS[name] = int64(st.Quantile(q))
	}
	if s.Resolve.Batches > 0 {
		r.LookupsPerBatch = float64(s.Resolve.Lookups) / float64(s.Resolve.Batches)
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		r.Process["user_us"] = uint64(ru.Utime.Sec)*1e6 + uint64(ru.Utime.Usec)
		r.Process["system_us"] = uint64(ru.Stime.Sec)*1e6 + uint64(ru.Stime.Usec)
	}
	if hwm, ok := peakRSS(); ok {
		r.Process["max_rss_bytes"] = hwm
	}
	return r
}

// peakRSS reads this process's peak resident set size (VmHWM). Rusage's
// ru_maxrss is no good here: after exec it starts from the parent's peak.
func peakRSS() (uint64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for _, ln := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(ln, "VmHWM:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024, err == nil
		}
	}
	return 0, false
}

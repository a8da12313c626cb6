package summary

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/siftr-probe/siftr-probe/internal/logset"
	"github.com/siftr-probe/siftr-probe/internal/sketch"
)

// Config says what to summarise.
type Config struct {
	Paths   []string  // log files, oldest first; "-" is Stdin
	Stdin   io.Reader // read for "-"
	FlowIDs []uint32  // only these flows (nil = all)
	// PPL is the probe's --ppl for the identity check: 1 makes it exact;
	// 0 = unknown (an enable line's "ppl" key is used when present).
	PPL      uint64
	Progress io.Writer // progress lines while reading; nil = none
}

// Report is the summary: what --json prints.
type Report struct {
	Files     []FileReport    `json:"files"`
	Sections  []SectionReport `json:"sections"`
	Total     TotalReport     `json:"total"`
	Malformed uint64          `json:"malformed_lines"`
	Problems  []string        `json:"first_malformed"` // "file:line: reason: \"text\""
	Notes     []string        `json:"notes"`
}

// FileReport is one input file.
type FileReport struct {
	Name        string `json:"name"`
	Format      string `json:"format"`      // "siftr" or "jsonl"
	Compression string `json:"compression"` // "plain", "gzip", "zstd"
	Lines       int64  `json:"lines"`
	Bytes       int64  `json:"bytes"` // decompressed
}

// SectionReport is one run (see logset's sections).
type SectionReport struct {
	Index     int            `json:"index"`
	Start     string         `json:"start"` // file:line
	End       string         `json:"end"`
	Files     []string       `json:"files"`
	Format    string         `json:"format"`
	Enable    *EnableReport  `json:"enable"`  // null: no enable line
	Disable   *DisableReport `json:"disable"` // null: no disable line
	DataLines InOut          `json:"data_lines"`
	Malformed uint64         `json:"malformed_lines"`
	// DurationS is enable to disable time, or first to last record when
	// either line is missing.
	DurationS  float64        `json:"duration_s"`
	OutOfOrder uint64         `json:"records_out_of_order"`
	Identity   IdentityReport `json:"identity"`
	FlowList   *FlowListCheck `json:"flow_list_check"` // null without a disable line
	Flows      []FlowReport   `json:"flows"`
}

// InOut is a count per direction.
type InOut struct {
	In  uint64 `json:"in"`
	Out uint64 `json:"out"`
}

// EnableReport is an enable line.
type EnableReport struct {
	Time        string `json:"time"` // RFC 3339, µs, UTC
	TimeUS      int64  `json:"time_us"`
	SiftrVer    string `json:"siftrver"`
	SysName     string `json:"sysname"`
	SysVer      string `json:"sysver"`
	IPMode      string `json:"ipmode"`
	StateSource string `json:"state_source,omitempty"`
	PPL         uint64 `json:"ppl,omitempty"`
}

// DisableReport is a disable line's totals.
type DisableReport struct {
	Time         string   `json:"time"`
	TimeUS       int64    `json:"time_us"`
	Packets      InOut    `json:"packets"`
	TotalPackets uint64   `json:"total_tcp_pkts"`
	SkipMalloc   InOut    `json:"skipped_malloc"`
	SkipTCPCB    InOut    `json:"skipped_tcpcb"`
	SkipInPCB    InOut    `json:"skipped_inpcb"`
	TotalSkipped uint64   `json:"total_skipped_tcp_pkts"`
	FlowList     []string `json:"flow_list"` // "laddr;lport-faddr;fport"
}

// IdentityReport is the conservation check of a section: per direction,
// packets = data lines + sampled out + skipped.
type IdentityReport struct {
	// Check is "exact" (ppl 1: data lines = packets - skipped), "bound"
	// (data lines <= packets - skipped: the sampled-out count is not in the
	// disable line) or "none" (no disable line).
	Check string `json:"check"`
	Holds *bool  `json:"holds"` // null for "none"
	PPL   uint64 `json:"ppl"`   // 0 = unknown
	// Equal is whether data lines = packets - skipped in both directions
	// (what ppl 1 gives), for a "bound" check.
	Equal  bool            `json:"equal"`
	PerDir []IdentityByDir `json:"per_direction"`
	Notes  []string        `json:"notes"`
}

// IdentityByDir is one direction of the identity.
type IdentityByDir struct {
	Dir       string `json:"direction"` // "in", "out"
	DataLines uint64 `json:"data_lines"`
	Packets   uint64 `json:"packets"`
	Skipped   uint64 `json:"skipped"`
}

// FlowListCheck compares the disable line's flow list with the flows that
// have records in the section (by 4-tuple).
type FlowListCheck struct {
	Listed          int `json:"listed"`
	ListedNoRecords int `json:"listed_without_records"`
	NotListed       int `json:"with_records_not_listed"`
}

// TotalReport sums the sections.
type TotalReport struct {
	Sections      int          `json:"sections"`
	DataLines     InOut        `json:"data_lines"`
	Packets       InOut        `json:"packets"` // over the sections with a disable line
	Skipped       InOut        `json:"skipped"`
	IdentityHolds bool         `json:"identity_holds"` // in every section that has a disable line
	Checked       int          `json:"sections_checked"`
	Flows         []FlowReport `json:"flows"` // each flow over all sections
}

// Dist is a distribution over a flow's records.
type Dist struct {
	N   uint64  `json:"n"`
	Min uint64  `json:"min"`
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max uint64  `json:"max"`
}

func distOf(s *sketch.Sketch) *Dist {
	if s.Count() == 0 {
		return nil
	}
	return &Dist{N: s.Count(), Min: s.Min(), P50: s.Quantile(0.5), P99: s.Quantile(0.99), Max: s.Max()}
}

// FlowReport is one flow's statistics.
type FlowReport struct {
	FlowID      uint32    `json:"flowid"`
	Local       string    `json:"local"`
	Remote      string    `json:"remote"`
	Start       string    `json:"start"`
	DurationS   float64   `json:"duration_s"` // first to last record
	Records     InOut     `json:"records"`
	MSS         [2]uint64 `json:"mss"`       // min, max
	SACK        string    `json:"sack"`      // "yes", "no", "mixed"
	SndScale    [2]uint64 `json:"snd_scale"` // min, max
	RcvScale    [2]uint64 `json:"rcv_scale"`
	Cong        []string  `json:"cong"`         // JSON lines only
	StateSource string    `json:"state_source"` // "-" when absent
	// Bytes: cwnd, ssthresh (finite values), inflight; µs: srtt, rto.
	Cwnd             *Dist  `json:"cwnd"`
	Ssthresh         *Dist  `json:"ssthresh"`
	SsthreshInfinite uint64 `json:"ssthresh_infinite_records"`
	SRTT             *Dist  `json:"srtt_us"`
	RTO              *Dist  `json:"rto_us"`
	Inflight         *Dist  `json:"inflight_bytes"`
	// Seconds in each state (see the package documentation).
	SlowStartS float64 `json:"slow_start_s"`
	CongAvoidS float64 `json:"congestion_avoidance_s"`
	RecoveryS  float64 `json:"recovery_s"`
	// Retransmissions (tcpi_total_retrans) at the first and last record,
	// JSON lines only; null when absent.
	Retrans     *RetransReport `json:"retransmissions"`
	StalenessNS *StaleReport   `json:"staleness_ns"`
}

// RetransReport is total_retrans at both ends of a flow's records.
type RetransReport struct {
	First uint64 `json:"first"`
	Last  uint64 `json:"last"`
	InLog uint64 `json:"in_log"` // last - first
}

// StaleReport is the distribution of staleness_ns.
type StaleReport struct {
	Min int64   `json:"min"`
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max uint64  `json:"max"`
}

func usTime(us int64) string {
	return time.UnixMicro(us).UTC().Format("2006-01-02T15:04:05.000000Z")
}

func flowReport(fs *FlowStats) FlowReport {
	f := fs.Flow
	r := FlowReport{
		FlowID: f.ID, Local: f.Local.String(), Remote: f.Remote.String(), Start: usTime(fs.FirstUS),
		DurationS: float64(fs.LastUS-fs.FirstUS) / 1e6, Records: InOut{fs.Records[0], fs.Records[1]},
		MSS: [2]uint64{fs.MSSMin, fs.MSSMax}, SndScale: fs.SndScale, RcvScale: fs.RcvScale,
		Cong: f.Congs, StateSource: "-",
		Cwnd: distOf(&fs.Cwnd), Ssthresh: distOf(&fs.Ssthresh), SsthreshInfinite: fs.SsthreshInf,
		SRTT: distOf(&fs.SRTT), RTO: distOf(&fs.RTO), Inflight: distOf(&fs.Inflight),
		SlowStartS: float64(fs.TimeUS[SlowStart]) / 1e6, CongAvoidS: float64(fs.TimeUS[CongAvoid]) / 1e6,
		RecoveryS: float64(fs.TimeUS[Recovery]) / 1e6,
	}
	if r.Cong == nil {
		r.Cong = []string{}
	}
	switch {
	case fs.SACK[0] == 0:
		r.SACK = "yes"
	case fs.SACK[1] == 0:
		r.SACK = "no"
	default:
		r.SACK = "mixed"
	}
	if len(fs.StateSourceRecords) > 0 {
		names := make([]string, 0, len(fs.StateSourceRecords))
		for k := range fs.StateSourceRecords {
			names = append(names, k)
		}
		slices.Sort(names)
		r.StateSource = strings.Join(names, "+")
	}
	if fs.HasRetrans {
		r.Retrans = &RetransReport{First: fs.RetransFirst, Last: fs.RetransLast}
		if fs.RetransLast > fs.RetransFirst {
			r.Retrans.InLog = fs.RetransLast - fs.RetransFirst
		}
	}
	if fs.HasStaleness {
		r.StalenessNS = &StaleReport{Min: fs.StalenessMin, P50: fs.Staleness.Quantile(0.5),
			P99: fs.Staleness.Quantile(0.99), Max: fs.Staleness.Max()}
	}
	return r
}

// identity checks a section's conservation identity.
func identity(s *logset.Section, ppl uint64) IdentityReport {
	id := IdentityReport{Check: "none", PPL: ppl, PerDir: []IdentityByDir{}, Notes: []string{}}
	if s.Enable != nil && s.Enable.PPL != 0 && ppl == 0 {
		id.PPL = s.Enable.PPL
	}
	d := s.Disable
	if d == nil {
		id.Notes = append(id.Notes, "no disable line: the run's totals are not in the input (cut short, or rotated and the later file not given)")
		return id
	}
	holds, equal := true, true
	for dir, name := range []string{"in", "out"} {
		sk := d.Skipped(dir)
		b := IdentityByDir{Dir: name, DataLines: s.Lines[dir], Packets: d.Packets[dir], Skipped: sk}
		id.PerDir = append(id.PerDir, b)
		if sk > d.Packets[dir] {
			holds, equal = false, false
			id.Notes = append(id.Notes, fmt.Sprintf("%s: %d skipped of %d packets", name, sk, d.Packets[dir]))
			continue
		}
		exp := d.Packets[dir] - sk
		if s.Lines[dir] > exp {
			holds = false
		}
		if s.Lines[dir] != exp {
			equal = false
		}
	}
	id.Equal = equal
	switch {
	case s.Enable == nil:
		id.Check = "bound"
		id.Notes = append(id.Notes, "no enable line: the section starts in a rotated file and the totals cover the whole run, so only data lines <= packets - skipped is checked")
	case id.PPL == 1:
		id.Check = "exact"
		holds = equal
	default:
		id.Check = "bound"
	}
	id.Holds = &holds
	if d.TotalPackets != d.Packets[0]+d.Packets[1] {
		id.Notes = append(id.Notes, fmt.Sprintf("total_tcp_pkts %d is not inbound + outbound (%d)", d.TotalPackets, d.Packets[0]+d.Packets[1]))
	}
	if sum := d.Skipped(0) + d.Skipped(1); d.TotalSkipped != sum {
		id.Notes = append(id.Notes, fmt.Sprintf("total_skipped_tcp_pkts %d is not the sum of the six skip counts (%d)", d.TotalSkipped, sum))
	}
	if s.Malformed > 0 {
		id.Notes = append(id.Notes, fmt.Sprintf("%d malformed lines in the section are not counted as data lines", s.Malformed))
	}
	return id
}

func flowListCheck(s *logset.Section) *FlowListCheck {
	if s.Disable == nil {
		return nil
	}
	type tuple struct{ l, r string }
	listed := map[tuple]int{}
	for _, f := range s.Disable.Flows {
		listed[tuple{unmap(f.Local), unmap(f.Remote)}]++
	}
	c := &FlowListCheck{Listed: len(s.Disable.Flows)}
	logged := map[tuple]bool{}
	for _, f := range s.Flows {
		t := tuple{unmap(f.Local), unmap(f.Remote)}
		logged[t] = true
		if listed[t] == 0 {
			c.NotListed++
		}
	}
	for t := range listed {
		if !logged[t] {
			c.ListedNoRecords += listed[t]
		}
	}
	return c
}

func unmap(ap netip.AddrPort) string {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
}

// Summarise reads the logs and builds the report. The error is for input
// that cannot be read (the report covers what was read before it).
func Summarise(cfg Config) (*Report, error) {
	agg := &aggregator{}
	res, err := logset.Read(logset.Config{Paths: cfg.Paths, Stdin: cfg.Stdin, FlowIDs: cfg.FlowIDs,
		Progress: cfg.Progress, ProgressPrefix: "siftr-probe summary"}, agg)
	if res == nil {
		return nil, err
	}
	rep := &Report{Malformed: res.Malformed, Problems: []string{}, Notes: res.Notes, Files: []FileReport{}, Sections: []SectionReport{}}
	if rep.Notes == nil {
		rep.Notes = []string{}
	}
	for _, p := range res.Problems {
		rep.Problems = append(rep.Problems, p.String())
	}
	for _, f := range res.Files {
		rep.Files = append(rep.Files, FileReport{f.Name, f.Format.String(), f.Compression.String(), f.Lines, f.Bytes})
	}
	total := make([]*FlowStats, len(res.Flows))
	rep.Total.IdentityHolds = true
	for _, ss := range agg.sections {
		s := ss.sec
		sr := SectionReport{Index: s.Index, Start: s.Start.String(), End: s.End.String(), Files: s.Files,
			Format: s.Format.String(), DataLines: InOut{s.Lines[0], s.Lines[1]}, Malformed: s.Malformed,
			OutOfOrder: s.OutOfOrder, Flows: []FlowReport{}}
		if e := s.Enable; e != nil {
			sr.Enable = &EnableReport{usTime(e.TimeUS), e.TimeUS, e.SiftrVer, e.SysName, e.SysVer, e.IPMode, e.StateSource, e.PPL}
		}
		if d := s.Disable; d != nil {
			dr := &DisableReport{Time: usTime(d.TimeUS), TimeUS: d.TimeUS, Packets: InOut{d.Packets[0], d.Packets[1]},
				TotalPackets: d.TotalPackets, SkipMalloc: InOut{d.SkipMalloc[0], d.SkipMalloc[1]},
				SkipTCPCB: InOut{d.SkipTCPCB[0], d.SkipTCPCB[1]}, SkipInPCB: InOut{d.SkipInPCB[0], d.SkipInPCB[1]},
				TotalSkipped: d.TotalSkipped, FlowList: []string{}}
			for _, f := range d.Flows {
				dr.FlowList = append(dr.FlowList, fmt.Sprintf("%s;%d-%s;%d", f.Local.Addr(), f.Local.Port(), f.Remote.Addr(), f.Remote.Port()))
			}
			sr.Disable = dr
			rep.Total.Packets.In += d.Packets[0]
			rep.Total.Packets.Out += d.Packets[1]
			rep.Total.Skipped.In += d.Skipped(0)
			rep.Total.Skipped.Out += d.Skipped(1)
		}
		switch {
		case s.Enable != nil && s.Disable != nil:
			sr.DurationS = float64(s.Disable.TimeUS-s.Enable.TimeUS) / 1e6
		default:
			sr.DurationS = float64(s.LastUS-s.FirstUS) / 1e6
		}
		sr.Identity = identity(s, cfg.PPL)
		if sr.Identity.Holds != nil {
			rep.Total.Checked++
			rep.Total.IdentityHolds = rep.Total.IdentityHolds && *sr.Identity.Holds
		}
		sr.FlowList = flowListCheck(s)
		var list []*FlowStats
		for _, fs := range ss.flows {
			if fs != nil {
				list = append(list, fs)
				if total[fs.Flow.Index] == nil {
					total[fs.Flow.Index] = newFlowStats(fs.Flow)
				}
				total[fs.Flow.Index].merge(fs)
			}
		}
		slices.SortStableFunc(list, func(a, b *FlowStats) int { return cmp.Compare(a.FirstUS, b.FirstUS) })
		for _, fs := range list {
			sr.Flows = append(sr.Flows, flowReport(fs))
		}
		rep.Total.DataLines.In += s.Lines[0]
		rep.Total.DataLines.Out += s.Lines[1]
		rep.Sections = append(rep.Sections, sr)
	}
	rep.Total.Sections = len(rep.Sections)
	rep.Total.Flows = []FlowReport{}
	for _, fs := range total {
		if fs != nil {
			rep.Total.Flows = append(rep.Total.Flows, flowReport(fs))
		}
	}
	if len(cfg.FlowIDs) > 0 {
		found := map[uint32]bool{}
		for _, f := range res.Flows {
			found[f.ID] = true
		}
		var missing []string
		for _, id := range cfg.FlowIDs {
			if !found[id] {
				missing = append(missing, fmt.Sprint(id))
			}
		}
		if len(missing) == len(cfg.FlowIDs) && err == nil {
			return rep, fmt.Errorf("no flow with flowid %s in the input", strings.Join(missing, ", "))
		}
		if len(missing) > 0 {
			rep.Notes = append(rep.Notes, "no flow with flowid "+strings.Join(missing, ", "))
		}
	}
	return rep, err
}

// WriteJSON writes the report as one indented JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

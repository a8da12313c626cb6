// Package logset reads one or more SIFTR logs as one stream, the way the
// summary, plot and convert commands need them: files in the order given
// (rotated files oldest first), each decompressed and its format detected
// on its own; the stream cut into sections at enable and disable lines;
// records grouped into flows; malformed lines counted, the first few kept.
//
// # Sections
//
// A section is one run of the probe, or the part of it the files hold: it
// starts at an enable line, or at the first data line when there is none
// (a file rotated by SIGHUP, or a log whose start is lost), and ends at a
// disable line, or at the next enable line or the end of the input when
// there is none. A section left open at the end of one file goes on in
// the next if that one starts without an enable line, so a run rotated
// into several files given oldest first is one section again.
//
// # Flows
//
// A flow is one socket: the same local and remote address and port and
// the same flowid (siftr-probe's flowid comes from the socket cookie, so a
// reused 4-tuple is a new flow; FreeBSD's is a hash of the 4-tuple). Flows
// are numbered in the order of their first record, across all sections.
//
// Read is for one goroutine; it calls the Handler on that goroutine.
package logset

import (
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/siftr-probe/siftr-probe/internal/siftrlog"
)

// MaxProblems is how many malformed lines Read keeps for the report.
const MaxProblems = 5

// Config says what Read reads.
type Config struct {
	Paths []string  // log files; "-" is Stdin
	Stdin io.Reader // read for "-"
	// FlowIDs, if not empty, limits the records passed to the Handler and
	// the flows listed to these flowids. Sections count every record.
	FlowIDs []uint32
	// Progress, if not nil, receives a line every ProgressEvery (default
	// 3 s) while reading: lines read, MB read and the rate.
	Progress       io.Writer
	ProgressPrefix string // e.g. "siftr-probe summary"
	ProgressEvery  time.Duration
}

// Pos is a place in the input.
type Pos struct {
	File string
	Line int64
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d", p.File, p.Line) }

// File is one input file.
type File struct {
	Name        string
	Format      siftrlog.Format
	Compression siftrlog.Compression
	Lines       int64 // lines read
	Bytes       int64 // decompressed bytes read
}

// Section is one run, or the part of it the input holds (see the package
// documentation).
type Section struct {
	Index      int // 1-based
	Start, End Pos
	Files      []string // the files it spans, in order
	Format     siftrlog.Format
	Enable     *siftrlog.Enable  // nil: starts without an enable line
	Disable    *siftrlog.Disable // nil: ends without a disable line
	Lines      [2]uint64         // well-formed data lines, inbound and outbound (all flows)
	Malformed  uint64            // malformed lines inside the section
	FirstUS    int64             // first and last record time (µs); 0 without records
	LastUS     int64
	OutOfOrder uint64 // records earlier than the one before them
	// Flows are the flows with records in this section, in order of their
	// first record (only the selected ones with Config.FlowIDs).
	Flows []*Flow
	seen  map[*Flow]bool
}

// Records returns the number of data lines of the section.
func (s *Section) Records() uint64 { return s.Lines[0] + s.Lines[1] }

// Flow is one socket's records across the input.
type Flow struct {
	Index         int    // 0-based, in order of first record
	ID            uint32 // the flowid column
	Local, Remote netip.AddrPort
	FirstUS       int64
	LastUS        int64
	Records       [2]uint64 // inbound, outbound
	// Congs and StateSources are the JSON lines values seen ("cubic",
	// "diag"), in order of first appearance; empty for text logs.
	Congs        []string
	StateSources []string
}

// Name returns "local -> remote".
func (f *Flow) Name() string { return f.Local.String() + " -> " + f.Remote.String() }

// Problem is a malformed line.
type Problem struct {
	Pos
	Reason string
	Text   string // the start of the line
}

func (p Problem) String() string {
	if p.Text == "" {
		return fmt.Sprintf("%s: %s", p.Pos, p.Reason)
	}
	return fmt.Sprintf("%s: %s: %q", p.Pos, p.Reason, p.Text)
}

// Result is what Read found.
type Result struct {
	Files     []*File
	Sections  []*Section
	Flows     []*Flow
	Lines     int64  // all lines read
	Records   uint64 // well-formed data lines (all flows)
	Malformed uint64
	Problems  []Problem // the first MaxProblems malformed lines
	// Notes are remarks on the input as a whole (files out of order).
	Notes []string
}

// Handler receives the stream. Pointers stay valid after the calls
// (Section and Flow are updated as reading goes on); rec is overwritten by
// the next line.
type Handler interface {
	// SectionStart is called when a section starts, before its first record.
	SectionStart(s *Section)
	// Record is called for each selected data line.
	Record(s *Section, f *Flow, rec *siftrlog.Record)
	// SectionEnd is called when a section ends (s.Disable is set if it
	// ended at a disable line).
	SectionEnd(s *Section)
}

type flowKey struct {
	local, remote netip.AddrPort
	id            uint32
}

type reader struct {
	cfg      Config
	h        Handler
	res      *Result
	cur      *Section
	flows    map[flowKey]*Flow
	lastKey  flowKey
	lastFlow *Flow
	want     map[uint32]bool
	start    time.Time
	lastProg time.Time
	bytes    int64
	lastUS   int64 // time of the last record read
}

// Read reads the logs of cfg. The error is for a file that cannot be
// opened or read (it names the file); malformed lines are no error, they
// are in Result. A Result is returned with the error too, covering what
// was read before it.
func Read(cfg Config, h Handler) (*Result, error) {
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = 3 * time.Second
	}
	r := &reader{cfg: cfg, h: h, res: &Result{}, flows: map[flowKey]*Flow{}, start: time.Now()}
	r.lastProg = r.start
	if len(cfg.FlowIDs) > 0 {
		r.want = map[uint32]bool{}
		for _, id := range cfg.FlowIDs {
			r.want[id] = true
		}
	}
	for _, p := range cfg.Paths {
		if err := r.readFile(p); err != nil {
			r.endSection()
			return r.res, err
		}
	}
	r.endSection()
	return r.res, nil
}

func (r *reader) readFile(path string) error {
	in, err := siftrlog.Open(path, r.cfg.Stdin)
	if err != nil {
		return err
	}
	defer in.Close()
	f := &File{Name: path, Compression: in.Compression}
	r.res.Files = append(r.res.Files, f)
	rd := siftrlog.NewReader(in)
	first := true // before the file's first record
	prevLast := r.lastUS
	for {
		err := rd.Next()
		f.Lines = rd.LineNumber()
		if err == io.EOF {
			break
		}
		pos := Pos{path, rd.LineNumber()}
		if err != nil {
			if le, ok := err.(*siftrlog.LineError); ok {
				r.problem(pos, le)
				continue
			}
			f.Bytes = rd.Bytes()
			return fmt.Errorf("%s: %w", path, err)
		}
		if f.Format == siftrlog.FormatUnknown {
			f.Format = rd.Format()
		}
		switch rd.Kind() {
		case siftrlog.KindEnable:
			r.endSection()
			e := *rd.Enable()
			r.startSection(pos, f.Format).Enable = &e
		case siftrlog.KindDisable:
			s := r.cur
			if s == nil {
				s = r.startSection(pos, f.Format)
			}
			r.continueIn(s, path)
			d := *rd.Disable()
			s.Disable = &d
			s.End = pos
			r.endSection()
		case siftrlog.KindRecord:
			rec := rd.Record()
			if first && prevLast != 0 && rec.TimeUS < prevLast {
				r.res.Notes = append(r.res.Notes, fmt.Sprintf(
					"%s starts before the file before it ends: give rotated files oldest first", path))
			}
			r.record(pos, f.Format, rec)
			r.lastUS = rec.TimeUS
			first = false
		}
		if rd.LineNumber()&0xffff == 0 {
			r.progress(in, rd)
		}
	}
	f.Bytes = rd.Bytes()
	r.bytes += f.Bytes
	r.res.Lines += rd.LineNumber()
	if r.cur != nil && r.cur.Files[len(r.cur.Files)-1] == path {
		r.cur.End = Pos{path, rd.LineNumber()}
	}
	return nil
}

// continueIn notes that section s goes on in file path.
func (r *reader) continueIn(s *Section, path string) {
	if s.Files[len(s.Files)-1] != path {
		s.Files = append(s.Files, path)
	}
}

func (r *reader) startSection(pos Pos, f siftrlog.Format) *Section {
	s := &Section{Index: len(r.res.Sections) + 1, Start: pos, End: pos, Files: []string{pos.File}, Format: f, seen: map[*Flow]bool{}}
	r.res.Sections = append(r.res.Sections, s)
	r.cur = s
	r.h.SectionStart(s)
	return s
}

func (r *reader) endSection() {
	if r.cur == nil {
		return
	}
	s := r.cur
	r.cur = nil
	s.seen = nil
	r.h.SectionEnd(s)
}

func (r *reader) problem(pos Pos, le *siftrlog.LineError) {
	r.res.Malformed++
	if r.cur != nil {
		r.cur.Malformed++
	}
	if len(r.res.Problems) < MaxProblems {
		r.res.Problems = append(r.res.Problems, Problem{Pos: pos, Reason: le.Reason, Text: le.Text})
	}
}

func (r *reader) record(pos Pos, format siftrlog.Format, rec *siftrlog.Record) {
	s := r.cur
	if s == nil {
		s = r.startSection(pos, format)
	}
	r.continueIn(s, pos.File)
	s.End = pos
	dir := 0
	if rec.Dir == 'o' {
		dir = 1
	}
	s.Lines[dir]++
	r.res.Records++
	if s.FirstUS == 0 {
		s.FirstUS = rec.TimeUS
	} else if rec.TimeUS < s.LastUS {
		s.OutOfOrder++
	}
	s.LastUS = max(s.LastUS, rec.TimeUS)
	id := uint32(rec.Num[siftrlog.FFlowID])
	if r.want != nil && !r.want[id] {
		return
	}
	k := flowKey{rec.Local, rec.Remote, id}
	f := r.lastFlow
	if f == nil || k != r.lastKey {
		f = r.flows[k]
		if f == nil {
			f = &Flow{Index: len(r.res.Flows), ID: id, Local: rec.Local, Remote: rec.Remote, FirstUS: rec.TimeUS}
			r.flows[k] = f
			r.res.Flows = append(r.res.Flows, f)
		}
		r.lastKey, r.lastFlow = k, f
	}
	if !s.seen[f] {
		s.seen[f] = true
		s.Flows = append(s.Flows, f)
	}
	f.Records[dir]++
	f.FirstUS = min(f.FirstUS, rec.TimeUS)
	f.LastUS = max(f.LastUS, rec.TimeUS)
	if x := &rec.Extra; x.Has != 0 {
		if x.Has&siftrlog.HasCong != 0 && (len(f.Congs) == 0 || f.Congs[len(f.Congs)-1] != x.Cong) {
			f.Congs = addNew(f.Congs, x.Cong)
		}
		if x.Has&siftrlog.HasStateSource != 0 && (len(f.StateSources) == 0 || f.StateSources[len(f.StateSources)-1] != x.StateSource) {
			f.StateSources = addNew(f.StateSources, x.StateSource)
		}
	}
	r.h.Record(s, f, rec)
}

func addNew(list []string, v string) []string {
	for _, x := range list {
		if x == v {
			return list
		}
	}
	return append(list, v)
}

func (r *reader) progress(in *siftrlog.Input, rd *siftrlog.Reader) {
	if r.cfg.Progress == nil {
		return
	}
	now := time.Now()
	if now.Sub(r.lastProg) < r.cfg.ProgressEvery {
		return
	}
	r.lastProg = now
	total := r.bytes + rd.Bytes()
	el := now.Sub(r.start).Seconds()
	msg := fmt.Sprintf("%s: %s: %.1fM lines, %.0f MB, %.0f MB/s", r.cfg.ProgressPrefix, in.Name,
		float64(r.res.Lines+rd.LineNumber())/1e6, float64(total)/1e6, float64(total)/1e6/el)
	if in.Size > 0 {
		msg += fmt.Sprintf(" (%.0f%% of the file)", 100*float64(in.RawBytes())/float64(in.Size))
	}
	fmt.Fprintln(r.cfg.Progress, msg)
}

package logset

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/logtest"
	"github.com/siftr-probe/siftr-probe/internal/siftrlog"
	"github.com/siftr-probe/siftr-probe/output"
	"github.com/siftr-probe/siftr-probe/tcp"
)

type counter struct {
	starts, ends, records int
	perSection            map[int]int
}

func (c *counter) SectionStart(*Section) { c.starts++ }
func (c *counter) SectionEnd(*Section)   { c.ends++ }
func (c *counter) Record(s *Section, f *Flow, r *siftrlog.Record) {
	c.records++
	if c.perSection == nil {
		c.perSection = map[int]int{}
	}
	c.perSection[s.Index]++
}

// TestSectionsAndFlows: a reused 4-tuple with a new socket is a new flow;
// a run rotated into two files is one section; data after a disable line
// without an enable line starts a section of its own.
func TestSectionsAndFlows(t *testing.T) {
	start := time.Unix(1700000000, 0)
	f := logtest.Flows(1)[0]
	g := f
	g.Cookie++ // same 4-tuple, new socket
	t0 := start.UnixNano()
	recs := []*correlate.Record{
		logtest.Record(f, tcp.DirOut, t0+1e6, logtest.State{CwndSegs: 10}),
		logtest.Record(f, tcp.DirIn, t0+2e6, logtest.State{CwndSegs: 10}),
		logtest.Record(g, tcp.DirOut, t0+3e6, logtest.State{CwndSegs: 10}),
	}
	var buf bytes.Buffer
	logtest.Write(&buf, output.SIFTR(), start, recs, []logtest.Flow{f, g}, [2]uint64{})
	lines := strings.SplitAfter(buf.String(), "\n")
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	os.WriteFile(a, []byte(strings.Join(lines[:3], "")), 0o644)
	// b: the rest of the run, then a record after the disable line.
	os.WriteFile(b, []byte(strings.Join(lines[3:], "")+lines[1]), 0o644)
	var c counter
	res, err := Read(Config{Paths: []string{a, b}}, &c)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Flows) != 2 || res.Flows[0].Records != [2]uint64{1, 2} || res.Flows[1].ID != uint32(g.Cookie) {
		t.Errorf("flows %+v %+v", res.Flows[0], res.Flows[1])
	}
	if len(res.Sections) != 2 || c.starts != 2 || c.ends != 2 || c.records != 4 {
		t.Fatalf("%d sections, handler %+v", len(res.Sections), c)
	}
	s1, s2 := res.Sections[0], res.Sections[1]
	if s1.Enable == nil || s1.Disable == nil || len(s1.Files) != 2 || s1.Records() != 3 || len(s1.Flows) != 2 {
		t.Errorf("section 1 %+v", s1)
	}
	if s2.Enable != nil || s2.Disable != nil || s2.Records() != 1 || s2.Start.File != b || s2.Start.Line != 3 {
		t.Errorf("section 2 %+v", s2)
	}
	// Only one flow asked for: sections still count every record.
	c = counter{}
	res, _ = Read(Config{Paths: []string{a, b}, FlowIDs: []uint32{uint32(g.Cookie)}}, &c)
	if len(res.Flows) != 1 || c.records != 1 || res.Sections[0].Records() != 3 {
		t.Errorf("filtered: %d flows, %d records passed, section %d", len(res.Flows), c.records, res.Sections[0].Records())
	}
}

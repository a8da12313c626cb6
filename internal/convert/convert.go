// Package convert is `siftr-probe convert`: SIFTR logs to Parquet or CSV,
// one row per data line, streamed in bounded memory.
//
// # Columns
//
// Column names are the JSON lines record keys (output/FORMATS.md). A JSON
// lines log gives every key of its records, in their order; a text log
// its 27 columns under the same names (direction is "in"/"out" and time
// is seconds, as in JSON lines). Several inputs give the union of their
// columns, taken from the first record of each input; a record's missing
// keys are null (Parquet) or empty (CSV); a key that no first record had
// is dropped and counted.
//
// Parquet types: strings (UTF-8) for addresses and names; DOUBLE for time;
// INT64 for the nanosecond times and staleness; unsigned 64-bit for the
// socket cookie, rates and byte counters; unsigned 16-bit for ports;
// unsigned 32-bit for every other known key. Keys FORMATS.md does not list
// are typed by their first value. Every column is optional (nullable).
//
// # Metadata
//
// A Parquet file carries the run metadata as key-value metadata, each a
// JSON document: siftr.sources (input files, format, rows), siftr.sections
// (every enable and disable line as key-value objects, with the rows of
// each section), siftr.flows (flowid, ends, records, first and last time)
// and siftr.malformed (the count and the first lines). CSV has a header
// row and no metadata.
package convert

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"

	"github.com/siftr-probe/siftr-probe/internal/logset"
	"github.com/siftr-probe/siftr-probe/internal/siftrlog"
)

// Config says what to convert.
type Config struct {
	Paths    []string  // log files; "-" is Stdin
	Stdin    io.Reader // read for "-"
	To       string    // "parquet" or "csv"
	Out      string    // the output file; "-" is Stdout
	Stdout   io.Writer
	FlowIDs  []uint32  // only these flows (nil = all)
	Progress io.Writer // progress lines; nil = none
	// RowGroupRows is the Parquet row group size (default 131072): the
	// rows held in memory before they are encoded and written.
	RowGroupRows int
}

// Result is what was written.
type Result struct {
	Rows      uint64
	Columns   []string
	Dropped   uint64 // values of keys outside the schema
	Malformed uint64
}

// Column kinds.
type kind uint8

const (
	kString kind = iota
	kDouble
	kInt64
	kUint64
	kUint32
	kUint16
	kBool
)

var knownKinds = map[string]kind{
	"direction": kString, "local_addr": kString, "remote_addr": kString, "tcp_state": kString,
	"tcp_flags_str": kString, "cong": kString, "ca_state": kString, "state_source": kString,
	"time":    kDouble,
	"time_ns": kInt64, "snapshot_time_ns": kInt64, "staleness_ns": kInt64,
	"cookie": kUint64, "delivery_rate": kUint64, "pacing_rate": kUint64, "bytes_acked": kUint64,
	"bytes_received": kUint64,
	"local_port":     kUint16, "remote_port": kUint16,
}

type column struct {
	name string
	kind kind
}

// schema is the ordered columns.
type schema struct {
	cols  []column
	index map[string]int
}

func (s *schema) add(name string, k kind) {
	if _, ok := s.index[name]; ok {
		return
	}
	s.index[name] = len(s.cols)
	s.cols = append(s.cols, column{name, k})
}

// textColumns are the text format's columns, by JSON lines key.
func (s *schema) addText() {
	for i := range siftrlog.NumFields {
		name := siftrlog.JSONKeyOf(i)
		k, ok := knownKinds[name]
		if !ok {
			k = kUint32
		}
		s.add(name, k)
	}
}

func (s *schema) addJSON(fields []siftrlog.Field) {
	for _, f := range fields {
		name := string(f.Key)
		if name == "type" {
			continue
		}
		k, ok := knownKinds[name]
		if !ok {
			switch f.Kind {
			case siftrlog.JSONString, siftrlog.JSONArray, siftrlog.JSONObject, siftrlog.JSONNull:
				k = kString
			case siftrlog.JSONBool:
				k = kBool
			default:
				k = kUint32
				if bytes.ContainsAny(f.Value, ".eE") {
					k = kDouble
				} else if _, isJSONKey := jsonKeys[name]; !isJSONKey {
					k = kInt64
				}
			}
		}
		s.add(name, k)
	}
}

// jsonKeys are the record keys FORMATS.md lists that are not in knownKinds
// (all unsigned 32-bit).
var jsonKeys = map[string]bool{}

func init() {
	for _, k := range strings.Fields(`snd_ssthresh snd_cwnd t_flags2 snd_wnd rcv_wnd snd_scale rcv_scale
		conn_state mss srtt_us sack_enabled t_flags rto_us snd_buf_hiwater snd_buf_cc rcv_buf_hiwater
		rcv_buf_cc inflight_bytes t_segqlen flowid flowtype seq ack tcp_flags window payload_len
		rttvar_us min_rtt_us retransmits total_retrans lost sacked unacked snd_cwnd_segs
		snd_ssthresh_segs notsent_bytes delivered`) {
		jsonKeys[k] = true
	}
}

// prescan reads each input up to its first record and builds the schema.
// It returns the stdin to use instead of cfg.Stdin (what prescan read of
// it, then the rest).
func prescan(cfg *Config) (*schema, io.Reader, error) {
	s := &schema{index: map[string]int{}}
	stdin := cfg.Stdin
	for _, p := range cfg.Paths {
		var raw io.Reader
		var head *bytes.Buffer
		if p == "-" {
			if stdin == nil {
				return nil, nil, errors.New("-: no standard input")
			}
			head = &bytes.Buffer{}
			raw = io.TeeReader(stdin, head)
		}
		in, err := siftrlog.Open(p, raw)
		if err != nil {
			return nil, nil, err
		}
		rd := siftrlog.NewReader(in)
		for {
			err := rd.Next()
			if err == nil && rd.Kind() == siftrlog.KindRecord {
				if rd.Format() == siftrlog.FormatJSONL {
					s.addJSON(rd.JSONFields())
				} else {
					s.addText()
				}
				break
			}
			if err != nil {
				if _, ok := err.(*siftrlog.LineError); !ok {
					break // end of the input, or an error Read will report
				}
			}
		}
		in.Close()
		if p == "-" {
			stdin = io.MultiReader(bytes.NewReader(head.Bytes()), stdin)
		}
	}
	return s, stdin, nil
}

// sink writes rows.
type sink interface {
	header(s *schema) error
	// row writes one row; vals[i] is column i, nil for null.
	row(vals []cell) error
	close(meta map[string]string) error
}

// cell is one value: raw text for CSV (as in the log), typed for Parquet.
type cell struct {
	set bool
	s   []byte  // strings, and the text of numbers
	u   uint64  // unsigned
	i   int64   // signed
	f   float64 // double
	b   bool
}

// Convert converts the logs of cfg. The output file is written under a
// temporary name and renamed when complete, so a failed conversion leaves
// no partial file.
func Convert(cfg Config) (*Result, error) {
	switch cfg.To {
	case "parquet", "csv":
	default:
		return nil, fmt.Errorf("unknown output format %q (want parquet or csv)", cfg.To)
	}
	if cfg.RowGroupRows <= 0 {
		cfg.RowGroupRows = 128 << 10
	}
	sch, stdin, err := prescan(&cfg)
	if err != nil {
		return nil, err
	}
	if len(sch.cols) == 0 {
		return nil, errors.New("no data line in the input: nothing to convert")
	}
	var w io.Writer
	var f *os.File
	tmp := ""
	if cfg.Out == "-" {
		w = cfg.Stdout
	} else {
		f, err = os.CreateTemp(filepath.Dir(cfg.Out), "."+filepath.Base(cfg.Out)+".*")
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.Out, errors.Unwrap(err))
		}
		tmp = f.Name()
		defer func() {
			if tmp != "" {
				f.Close()
				os.Remove(tmp)
			}
		}()
		w = f
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	var sk sink
	if cfg.To == "csv" {
		sk = &csvSink{w: bw}
	} else {
		sk = &parquetSink{w: bw, rowGroup: cfg.RowGroupRows}
	}
	if err := sk.header(sch); err != nil {
		return nil, err
	}
	h := &handler{sch: sch, sink: sk, vals: make([]cell, len(sch.cols))}
	res, rerr := logset.Read(logset.Config{Paths: cfg.Paths, Stdin: stdin, FlowIDs: cfg.FlowIDs,
		Progress: cfg.Progress, ProgressPrefix: "siftr-probe convert"}, h)
	if rerr == nil {
		rerr = h.err
	}
	if rerr != nil {
		return nil, rerr
	}
	if err := sk.close(metadata(res, h)); err != nil {
		return nil, fmt.Errorf("write %s: %w", cfg.Out, err)
	}
	if err := bw.Flush(); err != nil {
		return nil, fmt.Errorf("write %s: %w", cfg.Out, err)
	}
	if f != nil {
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("write %s: %w", cfg.Out, err)
		}
		if err := os.Rename(tmp, cfg.Out); err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.Out, err)
		}
		os.Chmod(cfg.Out, 0o644)
		tmp = ""
	}
	out := &Result{Rows: h.rows, Dropped: h.dropped, Malformed: res.Malformed}
	for _, c := range sch.cols {
		out.Columns = append(out.Columns, c.name)
	}
	return out, nil
}

// handler turns records into rows.
type handler struct {
	sch      *schema
	sink     sink
	vals     []cell
	rows     uint64
	dropped  uint64
	err      error
	slot     []slot
	fileRows map[string]uint64
	secRows  map[int]uint64
	numBuf   []byte
}

type slot struct {
	key []byte
	col int
}

func (h *handler) SectionStart(*logset.Section) {}
func (h *handler) SectionEnd(*logset.Section)   {}

func (h *handler) Record(s *logset.Section, f *logset.Flow, rec *siftrlog.Record) {
	if h.err != nil {
		return
	}
	for i := range h.vals {
		h.vals[i].set = false
	}
	if fields := rec.Fields; fields != nil {
		h.jsonRow(fields)
	} else {
		h.textRow(rec)
	}
	if h.fileRows == nil {
		h.fileRows, h.secRows = map[string]uint64{}, map[int]uint64{}
	}
	h.fileRows[s.End.File]++
	h.secRows[s.Index]++
	h.rows++
	h.err = h.sink.row(h.vals)
}

func (h *handler) set(col int, c cell) {
	c.set = true
	h.vals[col] = c
}

func (h *handler) textRow(rec *siftrlog.Record) {
	h.numBuf = h.numBuf[:0]
	for i := range siftrlog.NumFields {
		col := h.sch.index[siftrlog.JSONKeyOf(i)]
		switch i {
		case siftrlog.FDir:
			d := "in"
			if rec.Dir == 'o' {
				d = "out"
			}
			h.set(col, cell{s: []byte(d)})
		case siftrlog.FTime:
			start := len(h.numBuf)
			h.numBuf = strconv.AppendInt(h.numBuf, rec.TimeUS/1e6, 10)
			h.numBuf = append(h.numBuf, '.')
			us := rec.TimeUS % 1e6
			h.numBuf = append(h.numBuf, byte('0'+us/100000), byte('0'+us/10000%10), byte('0'+us/1000%10),
				byte('0'+us/100%10), byte('0'+us/10%10), byte('0'+us%10))
			h.set(col, cell{s: h.numBuf[start:], f: float64(rec.TimeUS) / 1e6})
		case siftrlog.FLAddr, siftrlog.FFAddr:
			a := rec.Local.Addr()
			if i == siftrlog.FFAddr {
				a = rec.Remote.Addr()
			}
			start := len(h.numBuf)
			h.numBuf = a.AppendTo(h.numBuf)
			h.set(col, cell{s: h.numBuf[start:]})
		default:
			start := len(h.numBuf)
			h.numBuf = strconv.AppendUint(h.numBuf, rec.Num[i], 10)
			h.set(col, cell{s: h.numBuf[start:], u: rec.Num[i]})
		}
	}
}

func (h *handler) jsonRow(fields []siftrlog.Field) {
	for i, f := range fields {
		col := -1
		if i < len(h.slot) && bytes.Equal(h.slot[i].key, f.Key) {
			col = h.slot[i].col
		} else {
			c, ok := h.sch.index[string(f.Key)]
			if !ok {
				c = -1
			}
			col = c
			if i < len(h.slot) {
				h.slot[i] = slot{append(h.slot[i].key[:0], f.Key...), col}
			} else if i < 256 {
				h.slot = append(h.slot, slot{append([]byte(nil), f.Key...), col})
			}
		}
		if col < 0 {
			if string(f.Key) != "type" {
				h.dropped++
			}
			continue
		}
		if f.Kind == siftrlog.JSONNull {
			continue
		}
		c := cell{s: f.Value}
		switch h.sch.cols[col].kind {
		case kDouble:
			v, err := strconv.ParseFloat(string(f.Value), 64)
			if err != nil {
				h.dropped++
				continue
			}
			c.f = v
		case kInt64:
			v, err := strconv.ParseInt(string(f.Value), 10, 64)
			if err != nil {
				h.dropped++
				continue
			}
			c.i = v
		case kUint64, kUint32, kUint16:
			v, err := strconv.ParseUint(string(f.Value), 10, 64)
			if err != nil || v > maxOf(h.sch.cols[col].kind) {
				h.dropped++
				continue
			}
			c.u = v
		case kBool:
			c.b = string(f.Value) == "true"
			if f.Kind != siftrlog.JSONBool {
				h.dropped++
				continue
			}
		}
		h.set(col, c)
	}
}

// maxOf returns the largest value of an unsigned kind.
func maxOf(k kind) uint64 {
	switch k {
	case kUint32:
		return 1<<32 - 1
	case kUint16:
		return 1<<16 - 1
	}
	return 1<<64 - 1
}

// metadata builds the Parquet key-value metadata.
func metadata(res *logset.Result, h *handler) map[string]string {
	type source struct {
		File        string `json:"file"`
		Format      string `json:"format"`
		Compression string `json:"compression"`
		Lines       int64  `json:"lines"`
		Rows        uint64 `json:"rows"`
	}
	type section struct {
		Index   int               `json:"index"`
		Start   string            `json:"start"`
		End     string            `json:"end"`
		Files   []string          `json:"files"`
		Format  string            `json:"format"`
		Enable  map[string]string `json:"enable"`
		Disable map[string]string `json:"disable"`
		Rows    uint64            `json:"rows"`
	}
	type flow struct {
		FlowID  uint32 `json:"flowid"`
		Local   string `json:"local"`
		Remote  string `json:"remote"`
		In      uint64 `json:"records_in"`
		Out     uint64 `json:"records_out"`
		FirstUS int64  `json:"first_time_us"`
		LastUS  int64  `json:"last_time_us"`
	}
	var sources []source
	formats := map[string]bool{}
	var fnames []string
	for _, f := range res.Files {
		sources = append(sources, source{f.Name, f.Format.String(), f.Compression.String(), f.Lines, h.fileRows[f.Name]})
		if !formats[f.Format.String()] {
			formats[f.Format.String()] = true
			fnames = append(fnames, f.Format.String())
		}
	}
	kv := func(list []siftrlog.KV) map[string]string {
		m := map[string]string{}
		for _, e := range list {
			m[e.Key] = e.Value
		}
		return m
	}
	var sections []section
	for _, s := range res.Sections {
		sec := section{Index: s.Index, Start: s.Start.String(), End: s.End.String(), Files: s.Files,
			Format: s.Format.String(), Rows: h.secRows[s.Index]}
		if s.Enable != nil {
			sec.Enable = kv(s.Enable.Fields)
		}
		if s.Disable != nil {
			sec.Disable = kv(s.Disable.Fields)
		}
		sections = append(sections, sec)
	}
	var flows []flow
	for _, f := range res.Flows {
		flows = append(flows, flow{f.ID, f.Local.String(), f.Remote.String(), f.Records[0], f.Records[1], f.FirstUS, f.LastUS})
	}
	first := []string{}
	for _, p := range res.Problems {
		first = append(first, p.String())
	}
	mal := map[string]any{"count": res.Malformed, "first": first}
	js := func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	}
	return map[string]string{
		"siftr.format":    strings.Join(fnames, ","),
		"siftr.sources":   js(sources),
		"siftr.sections":  js(sections),
		"siftr.flows":     js(flows),
		"siftr.malformed": js(mal),
	}
}

// parquetSink writes Parquet.
type parquetSink struct {
	w        io.Writer
	rowGroup int
	pw       *parquet.GenericWriter[any]
	cols     []column
	buf      []parquet.Row
	bytes    [][]byte // copies of the byte values of buf
	nbuf     int
}

// orderedGroup is a Parquet group whose columns keep the schema's order
// (parquet.Group sorts them by name).
type orderedGroup struct {
	parquet.Group
	fields []parquet.Field
}

func (g orderedGroup) Fields() []parquet.Field { return g.fields }

func (p *parquetSink) header(s *schema) error {
	p.cols = s.cols
	g := orderedGroup{Group: parquet.Group{}}
	for _, c := range s.cols {
		var n parquet.Node
		switch c.kind {
		case kString:
			n = parquet.String()
		case kDouble:
			n = parquet.Leaf(parquet.DoubleType)
		case kInt64:
			n = parquet.Int(64)
		case kUint64:
			n = parquet.Uint(64)
		case kUint32:
			n = parquet.Uint(32)
		case kUint16:
			n = parquet.Uint(16)
		case kBool:
			n = parquet.Leaf(parquet.BooleanType)
		}
		n = parquet.Optional(n)
		g.Group[c.name] = n
	}
	fieldsByName := map[string]parquet.Field{}
	for _, f := range g.Group.Fields() {
		fieldsByName[f.Name()] = f
	}
	for _, c := range s.cols {
		g.fields = append(g.fields, fieldsByName[c.name])
	}
	sch := parquet.NewSchema("siftr", g)
	p.pw = parquet.NewGenericWriter[any](p.w, sch, parquet.Compression(&zstd.Codec{}),
		parquet.MaxRowsPerRowGroup(int64(p.rowGroup)), parquet.CreatedBy("siftr-probe", "", ""))
	return nil
}

func (p *parquetSink) row(vals []cell) error {
	if p.nbuf == len(p.buf) {
		p.buf = append(p.buf, make(parquet.Row, len(p.cols)))
		p.bytes = append(p.bytes, nil)
	}
	row := p.buf[p.nbuf][:len(p.cols)]
	bb := p.bytes[p.nbuf][:0]
	for i, c := range vals {
		if !c.set {
			row[i] = parquet.NullValue().Level(0, 0, i)
			continue
		}
		var v parquet.Value
		switch p.cols[i].kind {
		case kString:
			start := len(bb)
			bb = append(bb, c.s...)
			v = parquet.ByteArrayValue(bb[start:len(bb):len(bb)])
		case kDouble:
			v = parquet.DoubleValue(c.f)
		case kInt64:
			v = parquet.Int64Value(c.i)
		case kUint64:
			v = parquet.Int64Value(int64(c.u))
		case kUint32, kUint16:
			v = parquet.Int32Value(int32(uint32(c.u)))
		case kBool:
			v = parquet.BooleanValue(c.b)
		}
		row[i] = v.Level(0, 1, i)
	}
	p.buf[p.nbuf] = row
	p.bytes[p.nbuf] = bb
	p.nbuf++
	if p.nbuf == 1024 {
		return p.flush()
	}
	return nil
}

func (p *parquetSink) flush() error {
	if p.nbuf == 0 {
		return nil
	}
	_, err := p.pw.WriteRows(p.buf[:p.nbuf])
	p.nbuf = 0
	return err
}

func (p *parquetSink) close(meta map[string]string) error {
	if err := p.flush(); err != nil {
		return err
	}
	for _, k := range []string{"siftr.format", "siftr.sources", "siftr.sections", "siftr.flows", "siftr.malformed"} {
		p.pw.SetKeyValueMetadata(k, meta[k])
	}
	return p.pw.Close()
}

// csvSink writes CSV (RFC 4180): a header row, then one row per record.
type csvSink struct {
	w    *bufio.Writer
	cols []column
}

func (c *csvSink) header(s *schema) error {
	c.cols = s.cols
	for i, col := range s.cols {
		if i > 0 {
			c.w.WriteByte(',')
		}
		writeCSVField(c.w, []byte(col.name))
	}
	_, err := c.w.WriteString("\r\n")
	return err
}

func (c *csvSink) row(vals []cell) error {
	for i, v := range vals {
		if i > 0 {
			c.w.WriteByte(',')
		}
		if v.set {
			writeCSVField(c.w, v.s)
		}
	}
	_, err := c.w.WriteString("\r\n")
	return err
}

func (c *csvSink) close(map[string]string) error { return nil }

func writeCSVField(w *bufio.Writer, b []byte) {
	if !bytes.ContainsAny(b, ",\"\r\n") && (len(b) == 0 || (b[0] != ' ' && b[len(b)-1] != ' ')) {
		w.Write(b)
		return
	}
	w.WriteByte('"')
	for _, ch := range b {
		if ch == '"' {
			w.WriteByte('"')
		}
		w.WriteByte(ch)
	}
	w.WriteByte('"')
}

package siftrlog

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"unsafe"
)

// Format is the kind of log a Reader found, from the first line.
type Format uint8

// Log formats.
const (
	FormatUnknown Format = iota // no line read yet
	FormatText                  // SIFTR 1.3.0 text (siftr-probe or FreeBSD)
	FormatJSONL                 // siftr-probe's JSON lines (--format jsonl)
)

func (f Format) String() string {
	switch f {
	case FormatText:
		return "siftr"
	case FormatJSONL:
		return "jsonl"
	}
	return "unknown"
}

// Kind is what the current line of a Reader is.
type Kind uint8

// Line kinds.
const (
	KindNone    Kind = iota
	KindRecord       // a data line: Reader.Record
	KindEnable       // an enable line: Reader.Enable
	KindDisable      // a disable line: Reader.Disable
)

// InfiniteSsthresh is FreeBSD's snd_ssthresh before the first loss
// (TCP_MAXWIN << TCP_MAX_WINSHIFT); siftr-probe logs Linux's infinite
// ssthresh as this value too.
const InfiniteSsthresh = 1073725440

// MaxLineLen is the longest line a Reader accepts (a disable line lists
// every flow, so it can be long); longer lines are skipped as malformed.
const MaxLineLen = 64 << 20

// Record is one data line. Num and the embedded Line hold what both
// formats have; Extra what only JSON lines carry.
type Record struct {
	Line
	// TimeNS is the packet time in ns since the epoch: JSON lines'
	// time_ns, or TimeUS*1000 for text.
	TimeNS int64
	Extra  Extra
	// Fields are a JSON lines record's keys and values in line order
	// (Reader.JSONFields), nil for text; valid until the next line.
	Fields []Field
}

// Extra is what a JSON lines record has beyond the SIFTR columns. Has
// says which keys were present.
type Extra struct {
	Has          uint32 // HasStaleness | HasRetrans | ...
	StalenessNS  int64  // staleness_ns
	TotalRetrans uint64 // total_retrans
	// Strings are interned: they stay valid after the next line.
	Cong        string // cong
	StateSource string // state_source ("diag", "exact")
	CAState     string // ca_state
}

// Bits of Extra.Has.
const (
	HasTimeNS = 1 << iota
	HasStaleness
	HasRetrans
	HasCong
	HasStateSource
	HasCAState
)

// KV is one key=value of an enable or disable line, in line order. For
// JSON lines, string values are unescaped, numbers are their text, and
// flow_list is rendered as in the text format.
type KV struct{ Key, Value string }

// Enable is an enable line.
type Enable struct {
	TimeUS   int64 // enable_time_secs and _usecs as µs since the epoch
	SiftrVer string
	SysName  string // "Linux" (siftr-probe) or "FreeBSD"
	SysVer   string
	IPMode   string
	// StateSource and PPL are optional JSON lines keys: "" and 0 when absent.
	StateSource string
	PPL         uint64
	Fields      []KV
}

// FlowName is one entry of a disable line's flow list.
type FlowName struct{ Local, Remote netip.AddrPort }

// Disable is a disable line. Index 0 is inbound, 1 outbound.
type Disable struct {
	TimeUS       int64
	Packets      [2]uint64 // num_inbound_tcp_pkts, num_outbound_tcp_pkts
	TotalPackets uint64    // total_tcp_pkts
	SkipMalloc   [2]uint64
	SkipTCPCB    [2]uint64
	SkipInPCB    [2]uint64
	TotalSkipped uint64 // total_skipped_tcp_pkts
	// FlowList is the flow list as the text format writes it
	// ("laddr;lport-faddr;fport," per flow); Flows the same parsed.
	FlowList string
	Flows    []FlowName
	Fields   []KV
}

// Skipped returns the skips of direction d (0 in, 1 out) over the three reasons.
func (d *Disable) Skipped(dir int) uint64 {
	return d.SkipMalloc[dir] + d.SkipTCPCB[dir] + d.SkipInPCB[dir]
}

// LineError is a line that is not well formed. The Reader can go on
// after it.
type LineError struct {
	Line   int64  // 1-based line number
	Reason string // what is wrong
	Text   string // the start of the line (at most 80 bytes)
}

func (e *LineError) Error() string {
	if e.Text == "" {
		return fmt.Sprintf("line %d: %s", e.Line, e.Reason)
	}
	return fmt.Sprintf("line %d: %s: %q", e.Line, e.Reason, e.Text)
}

// Reader reads a SIFTR 1.3.0 text log (siftr-probe's or FreeBSD's) or a
// siftr-probe JSON lines log, one line at a time, without allocating per
// data line. The format is taken from the first line. A Reader is for one
// goroutine.
type Reader struct {
	br     *bufio.Reader
	long   []byte // a line longer than br's buffer
	line   int64
	nbytes int64
	format Format
	kind   Kind
	rec    Record
	en     Enable
	dis    Disable
	js     jsonScanner
	intern map[string]string
	addrs  [32]addrCache
	err    error
}

// NewReader returns a Reader of r. It buffers r itself.
func NewReader(r io.Reader) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, 1<<20), intern: map[string]string{}}
}

// Reset makes the Reader read a new input from its start, keeping its buffers.
func (r *Reader) Reset(in io.Reader) {
	r.br.Reset(in)
	r.line, r.nbytes, r.format, r.kind, r.err = 0, 0, FormatUnknown, KindNone, nil
}

// Format returns the log's format; FormatUnknown before the first line.
func (r *Reader) Format() Format { return r.format }

// Kind returns the kind of the line the last successful Next read.
func (r *Reader) Kind() Kind { return r.kind }

// LineNumber returns the 1-based number of the line last read.
func (r *Reader) LineNumber() int64 { return r.line }

// Bytes returns how many bytes of input have been consumed.
func (r *Reader) Bytes() int64 { return r.nbytes }

// Record returns the current data line. It is overwritten by the next call
// to Next.
func (r *Reader) Record() *Record { return &r.rec }

// Enable returns the current enable line, overwritten by the next one.
func (r *Reader) Enable() *Enable { return &r.en }

// Disable returns the current disable line, overwritten by the next one.
func (r *Reader) Disable() *Disable { return &r.dis }

// JSONFields returns the key-value pairs of the current JSON line, in line
// order. Keys and values point into the Reader's buffers: they are valid
// until the next call to Next. Empty for text logs.
func (r *Reader) JSONFields() []Field { return r.js.fields }

// Next reads the next line. It returns nil for a well-formed line (see
// Kind), a *LineError for a malformed one (call Next again to go on),
// io.EOF at the end of the input, or the read error. A last line without
// a newline was cut short: it is a *LineError and is not used.
func (r *Reader) Next() error {
	r.kind = KindNone
	if r.err != nil {
		return r.err
	}
	b, tooLong := r.readLine()
	if len(b) == 0 && !tooLong {
		return r.err
	}
	r.line++
	if tooLong {
		return r.lineErr(fmt.Sprintf("line longer than %d MB", MaxLineLen>>20), b)
	}
	if b[len(b)-1] != '\n' {
		if r.err == io.EOF {
			return r.lineErr("no newline at the end of the input: the line was cut short", b)
		}
		return r.lineErr("cut short by a read error", b)
	}
	b = b[:len(b)-1]
	if len(b) == 0 {
		return r.lineErr("empty line", nil)
	}
	if r.format == FormatUnknown {
		if b[0] == '{' {
			r.format = FormatJSONL
		} else {
			r.format = FormatText
		}
	}
	if r.format == FormatJSONL {
		return r.parseJSON(b)
	}
	return r.parseText(b)
}

// readLine returns the next line with its '\n', or without it when the
// input ended (or failed) first; then r.err is set. A line longer than
// MaxLineLen is consumed to its end and reported as tooLong, with its start.
func (r *Reader) readLine() (line []byte, tooLong bool) {
	b, err := r.br.ReadSlice('\n')
	r.nbytes += int64(len(b))
	if errors.Is(err, bufio.ErrBufferFull) {
		r.long = append(r.long[:0], b...)
		for errors.Is(err, bufio.ErrBufferFull) {
			b, err = r.br.ReadSlice('\n')
			r.nbytes += int64(len(b))
			if len(r.long) <= MaxLineLen {
				r.long = append(r.long, b...)
			}
		}
		b = r.long
		if len(b) > MaxLineLen {
			tooLong = true
			b = b[:128]
		}
	}
	if err != nil {
		r.err = err
	}
	return b, tooLong
}

func (r *Reader) lineErr(reason string, b []byte) *LineError {
	const max = 80
	if len(b) > max {
		b = b[:max]
	}
	return &LineError{Line: r.line, Reason: reason, Text: string(bytes.TrimRight(b, "\n"))}
}

var (
	enableKeys  = []string{"enable_time_secs", "enable_time_usecs", "siftrver", "sysname", "sysver", "ipmode"}
	disableKeys = []string{"disable_time_secs", "disable_time_usecs", "num_inbound_tcp_pkts", "num_outbound_tcp_pkts",
		"total_tcp_pkts", "num_inbound_skipped_pkts_malloc", "num_outbound_skipped_pkts_malloc",
		"num_inbound_skipped_pkts_tcpcb", "num_outbound_skipped_pkts_tcpcb",
		"num_inbound_skipped_pkts_inpcb", "num_outbound_skipped_pkts_inpcb",
		"total_skipped_tcp_pkts", "flow_list"}
)

func (r *Reader) parseText(b []byte) error {
	switch {
	case bytes.HasPrefix(b, []byte("enable_time_secs=")):
		kv, err := tabKeyValues(b, enableKeys)
		if err != nil {
			return r.lineErr(err.Error(), b)
		}
		if err := r.setEnable(kv); err != nil {
			return r.lineErr(err.Error(), b)
		}
		r.kind = KindEnable
		return nil
	case bytes.HasPrefix(b, []byte("disable_time_secs=")):
		kv, err := tabKeyValues(b, disableKeys)
		if err != nil {
			return r.lineErr(err.Error(), b)
		}
		if err := r.setDisable(kv, nil); err != nil {
			return r.lineErr(err.Error(), b)
		}
		r.kind = KindDisable
		return nil
	case b[0] == '{':
		return r.lineErr("a JSON object in a SIFTR text log", b)
	}
	if reason := r.parseDataLine(b); reason != "" {
		return r.lineErr(reason, b)
	}
	r.kind = KindRecord
	return nil
}

func tabKeyValues(b []byte, keys []string) ([]KV, error) {
	parts := strings.Split(string(b), "\t")
	if len(parts) != len(keys) {
		return nil, fmt.Errorf("%d tab-separated fields, want %d", len(parts), len(keys))
	}
	kv := make([]KV, len(parts))
	for i, p := range parts {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k != keys[i] {
			return nil, fmt.Errorf("field %d is %q, want key %s", i+1, p, keys[i])
		}
		kv[i] = KV{k, v}
	}
	return kv, nil
}

// setEnable fills r.en from an enable line's key-values (text or JSON).
func (r *Reader) setEnable(kv []KV) error {
	e := Enable{Fields: kv}
	var sec, usec int64
	var got int
	for _, f := range kv {
		var err error
		switch f.Key {
		case "enable_time_secs":
			sec, err = strconv.ParseInt(f.Value, 10, 64)
			got |= 1
		case "enable_time_usecs":
			usec, err = strconv.ParseInt(f.Value, 10, 64)
			if err == nil && (usec < 0 || usec > 999999) {
				err = errors.New("out of range")
			}
			got |= 2
		case "siftrver":
			e.SiftrVer = f.Value
		case "sysname":
			e.SysName = f.Value
		case "sysver":
			e.SysVer = f.Value
		case "ipmode":
			e.IPMode = f.Value
		case "state_source":
			e.StateSource = f.Value
		case "ppl":
			e.PPL, err = strconv.ParseUint(f.Value, 10, 64)
		}
		if err != nil {
			return fmt.Errorf("bad %s %q", f.Key, f.Value)
		}
	}
	if got != 3 {
		return errors.New("no enable time")
	}
	e.TimeUS = sec*1e6 + usec
	r.en = e
	return nil
}

// setDisable fills r.dis from a disable line's key-values. flows, when not
// nil, is the JSON flow list (else the flow_list value is parsed as text).
func (r *Reader) setDisable(kv []KV, flows []FlowName) error {
	d := Disable{Fields: kv, Flows: flows}
	var sec, usec int64
	var got int
	for _, f := range kv {
		var err error
		var p *uint64
		switch f.Key {
		case "disable_time_secs":
			sec, err = strconv.ParseInt(f.Value, 10, 64)
			got |= 1
		case "disable_time_usecs":
			usec, err = strconv.ParseInt(f.Value, 10, 64)
			if err == nil && (usec < 0 || usec > 999999) {
				err = errors.New("out of range")
			}
			got |= 2
		case "num_inbound_tcp_pkts":
			p = &d.Packets[0]
		case "num_outbound_tcp_pkts":
			p = &d.Packets[1]
		case "total_tcp_pkts":
			p = &d.TotalPackets
		case "num_inbound_skipped_pkts_malloc":
			p = &d.SkipMalloc[0]
		case "num_outbound_skipped_pkts_malloc":
			p = &d.SkipMalloc[1]
		case "num_inbound_skipped_pkts_tcpcb":
			p = &d.SkipTCPCB[0]
		case "num_outbound_skipped_pkts_tcpcb":
			p = &d.SkipTCPCB[1]
		case "num_inbound_skipped_pkts_inpcb":
			p = &d.SkipInPCB[0]
		case "num_outbound_skipped_pkts_inpcb":
			p = &d.SkipInPCB[1]
		case "total_skipped_tcp_pkts":
			p = &d.TotalSkipped
		case "flow_list":
			d.FlowList = f.Value
			if flows == nil {
				d.Flows, err = parseFlowList(f.Value)
			}
		}
		if p != nil {
			*p, err = strconv.ParseUint(f.Value, 10, 64)
		}
		if err != nil {
			return fmt.Errorf("bad %s %q", f.Key, f.Value)
		}
	}
	if got != 3 {
		return errors.New("no disable time")
	}
	d.TimeUS = sec*1e6 + usec
	r.dis = d
	return nil
}

// parseFlowList parses "laddr;lport-faddr;fport," entries, each ending in a comma.
func parseFlowList(s string) ([]FlowName, error) {
	if s == "" {
		return nil, nil
	}
	if !strings.HasSuffix(s, ",") {
		return nil, errors.New("does not end with a comma")
	}
	var out []FlowName
	for e := range strings.SplitSeq(strings.TrimSuffix(s, ","), ",") {
		l, f, ok := strings.Cut(e, "-")
		if !ok {
			return nil, fmt.Errorf("entry %q", e)
		}
		la, err1 := parseAddrPort(l, ";")
		fa, err2 := parseAddrPort(f, ";")
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("entry %q", e)
		}
		out = append(out, FlowName{la, fa})
	}
	return out, nil
}

func parseAddrPort(s, sep string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, sep)
	if !ok {
		return netip.AddrPort{}, errors.New("no port")
	}
	addr, err := netip.ParseAddr(a)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(addr, uint16(port)), nil
}

// parseDataLine parses a text data line into r.rec; it returns what is
// wrong, or "".
func (r *Reader) parseDataLine(b []byte) string {
	rec := &r.rec
	rec.Extra = Extra{}
	rec.Fields = nil
	if len(b) < 2 || b[1] != ',' || (b[0] != 'i' && b[0] != 'o') {
		return "bad direction"
	}
	rec.Dir = b[0]
	p := 2
	// time: seconds '.' six digits of µs
	sec, q, ok := digits(b, p)
	if !ok || q-p > 18 || q >= len(b) || b[q] != '.' {
		return "bad time"
	}
	usec, q2, ok := digits(b, q+1)
	if !ok || q2-(q+1) != 6 || q2 >= len(b) || b[q2] != ',' {
		return "bad time"
	}
	rec.TimeUS = int64(sec)*1e6 + int64(usec)
	rec.TimeNS = rec.TimeUS * 1000
	p = q2 + 1
	var la, fa netip.Addr
	for i := FLAddr; i < NumFields; i++ {
		if i == FLAddr || i == FFAddr {
			end := bytes.IndexByte(b[p:], ',')
			if end < 0 {
				return fmt.Sprintf("%d fields, want %d", i, NumFields)
			}
			a, ok := r.addr(b[p : p+end])
			if !ok {
				return "bad address"
			}
			if i == FLAddr {
				la = a
			} else {
				fa = a
			}
			p += end + 1
			continue
		}
		v, q, ok := digits(b, p)
		if !ok || q-p > 10 || v > math.MaxUint32 {
			if q < len(b) && b[q] != ',' && !ok {
				return fmt.Sprintf("field %d: not a number", i+1)
			}
			if !ok && (q == len(b) || b[q] == ',') {
				return fmt.Sprintf("field %d: empty", i+1)
			}
			return fmt.Sprintf("field %d: out of range", i+1)
		}
		rec.Num[i] = v
		if i == NumFields-1 {
			if q != len(b) {
				if b[q] == ',' {
					return fmt.Sprintf("more than %d fields", NumFields)
				}
				return fmt.Sprintf("field %d: not a number", i+1)
			}
			break
		}
		if q >= len(b) {
			return fmt.Sprintf("%d fields, want %d", i+1, NumFields)
		}
		if b[q] != ',' {
			return fmt.Sprintf("field %d: not a number", i+1)
		}
		p = q + 1
	}
	if rec.Num[FLPort] > 65535 || rec.Num[FFPort] > 65535 {
		return "bad port"
	}
	rec.Local = netip.AddrPortFrom(la, uint16(rec.Num[FLPort]))
	rec.Remote = netip.AddrPortFrom(fa, uint16(rec.Num[FFPort]))
	return ""
}

// digits parses the decimal digits at b[p:]; ok is false when there are
// none or the value exceeds 2^64-1. q is the index after the last digit.
func digits(b []byte, p int) (v uint64, q int, ok bool) {
	q = p
	for q < len(b) {
		c := b[q] - '0'
		if c > 9 {
			break
		}
		v = v*10 + uint64(c)
		q++
	}
	if q-p > 19 { // may have overflowed: parse again, carefully
		v = 0
		for _, c := range b[p:q] {
			d := uint64(c - '0')
			if v > (math.MaxUint64-d)/10 {
				return 0, q, false
			}
			v = v*10 + d
		}
	}
	return v, q, q > p
}

// parseAddr parses an IP address without a zone. It does not retain b.
func parseAddr(b []byte) (netip.Addr, bool) {
	if len(b) == 0 || bytes.IndexByte(b, '%') >= 0 {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(unsafe.String(&b[0], len(b)))
	return a, err == nil
}

// addrCache remembers recently parsed addresses: a log has few.
type addrCache struct {
	raw  [46]byte
	n    uint8
	addr netip.Addr
}

// addr is parseAddr with a small direct-mapped cache.
func (r *Reader) addr(b []byte) (netip.Addr, bool) {
	if len(b) == 0 || len(b) > 46 {
		return parseAddr(b)
	}
	h := (uint(b[len(b)-1]) ^ uint(b[len(b)/2])<<1 ^ uint(len(b))<<2) % uint(len(r.addrs))
	c := &r.addrs[h]
	if int(c.n) == len(b) && string(c.raw[:c.n]) == string(b) {
		return c.addr, true
	}
	a, ok := parseAddr(b)
	if ok {
		c.n = uint8(copy(c.raw[:], b))
		c.addr = a
	}
	return a, ok
}

// internStr returns b as a string shared by all lines that hold the same
// bytes (congestion control names, ca_state, state_source).
func (r *Reader) internStr(b []byte) string {
	if s, ok := r.intern[string(b)]; ok {
		return s
	}
	if len(r.intern) >= 4096 {
		clear(r.intern)
	}
	s := string(b)
	r.intern[s] = s
	return s
}

package siftrlog

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// ValueKind is the JSON type of a Field's value.
type ValueKind uint8

// JSON value kinds.
const (
	JSONString ValueKind = iota + 1
	JSONNumber
	JSONBool
	JSONNull
	JSONArray
	JSONObject
)

// Field is one key and value of a JSON line. Value is the unescaped
// string for JSONString, the literal text otherwise (arrays and objects
// as they appear).
type Field struct {
	Key   []byte
	Value []byte
	Kind  ValueKind
}

// jsonScanner splits flat JSON objects into Fields, reusing its memory.
type jsonScanner struct {
	fields []Field
	buf    []byte // unescaped strings
	// slot caches, by position in the object, the record key index the
	// previous line had there: lines of one log have their keys in one order.
	slot []slotCache
}

type slotCache struct {
	key []byte
	idx int
}

var errJSON = errors.New("not a JSON object")

// scan splits the object in b into s.fields. Nested arrays and objects are
// kept whole as values.
func (s *jsonScanner) scan(b []byte) error {
	s.fields = s.fields[:0]
	s.buf = s.buf[:0]
	p := skipWS(b, 0)
	if p >= len(b) || b[p] != '{' {
		return errJSON
	}
	p = skipWS(b, p+1)
	if p < len(b) && b[p] == '}' {
		if skipWS(b, p+1) != len(b) {
			return errors.New("text after the JSON object")
		}
		return nil
	}
	// Unescaped strings are appended to s.buf; Value slices into it are
	// fixed up at the end, since s.buf may move while it grows.
	type pending struct{ field, off, n int }
	var fix [8]pending
	fixes := fix[:0]
	for {
		if p >= len(b) || b[p] != '"' {
			return errors.New("expected a key")
		}
		key, q, esc, err := scanString(b, p)
		if err != nil {
			return err
		}
		if esc {
			return errors.New("escaped key")
		}
		p = skipWS(b, q)
		if p >= len(b) || b[p] != ':' {
			return errors.New("expected ':'")
		}
		p = skipWS(b, p+1)
		if p >= len(b) {
			return errors.New("missing value")
		}
		f := Field{Key: key}
		switch c := b[p]; {
		case c == '"':
			v, q, esc, err := scanString(b, p)
			if err != nil {
				return err
			}
			f.Kind = JSONString
			if esc {
				off := len(s.buf)
				s.buf, err = unescape(s.buf, v)
				if err != nil {
					return err
				}
				fixes = append(fixes, pending{len(s.fields), off, len(s.buf) - off})
			} else {
				f.Value = v
			}
			p = q
		case c == '-' || (c >= '0' && c <= '9'):
			q := p + 1
			for q < len(b) && isNumByte(b[q]) {
				q++
			}
			f.Kind, f.Value = JSONNumber, b[p:q]
			if !validNumber(f.Value) {
				return fmt.Errorf("bad number %q", f.Value)
			}
			p = q
		case c == 't' && bytes.HasPrefix(b[p:], []byte("true")):
			f.Kind, f.Value = JSONBool, b[p:p+4]
			p += 4
		case c == 'f' && bytes.HasPrefix(b[p:], []byte("false")):
			f.Kind, f.Value = JSONBool, b[p:p+5]
			p += 5
		case c == 'n' && bytes.HasPrefix(b[p:], []byte("null")):
			f.Kind, f.Value = JSONNull, b[p:p+4]
			p += 4
		case c == '[' || c == '{':
			q, err := skipNested(b, p)
			if err != nil {
				return err
			}
			f.Kind, f.Value = JSONArray, b[p:q]
			if c == '{' {
				f.Kind = JSONObject
			}
			p = q
		default:
			return fmt.Errorf("bad value for %q", key)
		}
		s.fields = append(s.fields, f)
		p = skipWS(b, p)
		if p >= len(b) {
			return errors.New("unterminated object")
		}
		if b[p] == '}' {
			if skipWS(b, p+1) != len(b) {
				return errors.New("text after the JSON object")
			}
			break
		}
		if b[p] != ',' {
			return errors.New("expected ',' or '}'")
		}
		p = skipWS(b, p+1)
	}
	for _, x := range fixes {
		s.fields[x.field].Value = s.buf[x.off : x.off+x.n]
	}
	return nil
}

func skipWS(b []byte, p int) int {
	for p < len(b) && (b[p] == ' ' || b[p] == '\t' || b[p] == '\r' || b[p] == '\n') {
		p++
	}
	return p
}

func isNumByte(c byte) bool {
	return (c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-'
}

// validNumber checks JSON's number grammar.
func validNumber(b []byte) bool {
	p := 0
	if p < len(b) && b[p] == '-' {
		p++
	}
	if p >= len(b) {
		return false
	}
	if b[p] == '0' {
		p++
	} else {
		q := p
		for p < len(b) && b[p] >= '0' && b[p] <= '9' {
			p++
		}
		if p == q {
			return false
		}
	}
	if p < len(b) && b[p] == '.' {
		p++
		q := p
		for p < len(b) && b[p] >= '0' && b[p] <= '9' {
			p++
		}
		if p == q {
			return false
		}
	}
	if p < len(b) && (b[p] == 'e' || b[p] == 'E') {
		p++
		if p < len(b) && (b[p] == '+' || b[p] == '-') {
			p++
		}
		q := p
		for p < len(b) && b[p] >= '0' && b[p] <= '9' {
			p++
		}
		if p == q {
			return false
		}
	}
	return p == len(b)
}

// scanString scans the string starting at b[p] == '"'. It returns its raw
// contents, the index after the closing quote and whether it has escapes.
func scanString(b []byte, p int) (raw []byte, q int, esc bool, err error) {
	q = p + 1
	for q < len(b) {
		c := b[q]
		switch {
		case c == '"':
			return b[p+1 : q], q + 1, esc, nil
		case c == '\\':
			esc = true
			q += 2
			continue
		case c < 0x20:
			return nil, 0, false, errors.New("control character in a string")
		}
		q++
	}
	return nil, 0, false, errors.New("unterminated string")
}

// unescape appends the unescaped form of the raw string contents s.
func unescape(dst, s []byte) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		i++
		if i >= len(s) {
			return dst, errors.New("bad escape")
		}
		switch s[i] {
		case '"', '\\', '/':
			dst = append(dst, s[i])
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, ok := hex4(s, i+1)
			if !ok {
				return dst, errors.New("bad \\u escape")
			}
			i += 4
			if utf16.IsSurrogate(r) {
				r2, ok := rune(0), false
				if i+2 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
					r2, ok = hex4(s, i+3)
				}
				if dec := utf16.DecodeRune(r, r2); ok && dec != utf8.RuneError {
					r = dec
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
			dst = utf8.AppendRune(dst, r)
		default:
			return dst, errors.New("bad escape")
		}
	}
	return dst, nil
}

func hex4(s []byte, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range s[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// skipNested returns the index after the array or object starting at b[p].
func skipNested(b []byte, p int) (int, error) {
	depth := 0
	for q := p; q < len(b); q++ {
		switch b[q] {
		case '"':
			_, e, _, err := scanString(b, q)
			if err != nil {
				return 0, err
			}
			q = e - 1
		case '[', '{':
			depth++
			if depth > 32 {
				return 0, errors.New("nested too deep")
			}
		case ']', '}':
			depth--
			if depth == 0 {
				return q + 1, nil
			}
		}
	}
	return 0, errors.New("unterminated array or object")
}

// Record keys of JSON lines, beyond the Num indexes 0..NumFields-1.
const (
	jkType = NumFields + iota
	jkDirection
	jkTime
	jkTimeNS
	jkLocalAddr
	jkRemoteAddr
	jkStaleness
	jkRetrans
	jkCong
	jkStateSource
	jkCAState
	jkOther
)

// jsonRecordKeys maps JSON lines record keys to Num indexes or jk* values.
var jsonRecordKeys = map[string]int{
	"type": jkType, "direction": jkDirection, "time": jkTime, "time_ns": jkTimeNS,
	"local_addr": jkLocalAddr, "local_port": FLPort, "remote_addr": jkRemoteAddr, "remote_port": FFPort,
	"snd_ssthresh": FSsthresh, "snd_cwnd": FCwnd, "t_flags2": FFlags2, "snd_wnd": FSndWnd,
	"rcv_wnd": FRcvWnd, "snd_scale": FSndScale, "rcv_scale": FRcvScale, "conn_state": FState,
	"mss": FMSS, "srtt_us": FSRTT, "sack_enabled": FSACK, "t_flags": FFlags, "rto_us": FRTO,
	"snd_buf_hiwater": FSndBufHi, "snd_buf_cc": FSndBufCC, "rcv_buf_hiwater": FRcvBufHi,
	"rcv_buf_cc": FRcvBufCC, "inflight_bytes": FInflight, "t_segqlen": FSegQLen,
	"flowid": FFlowID, "flowtype": FFlowType,
	"staleness_ns": jkStaleness, "total_retrans": jkRetrans, "cong": jkCong,
	"state_source": jkStateSource, "ca_state": jkCAState,
}

// JSONKeyOf returns the JSON lines record key of text column i (FDir..FFlowType).
func JSONKeyOf(i int) string { return jsonKeyNames[i] }

var jsonKeyNames = [NumFields]string{
	FDir: "direction", FTime: "time", FLAddr: "local_addr", FLPort: "local_port",
	FFAddr: "remote_addr", FFPort: "remote_port", FSsthresh: "snd_ssthresh", FCwnd: "snd_cwnd",
	FFlags2: "t_flags2", FSndWnd: "snd_wnd", FRcvWnd: "rcv_wnd", FSndScale: "snd_scale",
	FRcvScale: "rcv_scale", FState: "conn_state", FMSS: "mss", FSRTT: "srtt_us", FSACK: "sack_enabled",
	FFlags: "t_flags", FRTO: "rto_us", FSndBufHi: "snd_buf_hiwater", FSndBufCC: "snd_buf_cc",
	FRcvBufHi: "rcv_buf_hiwater", FRcvBufCC: "rcv_buf_cc", FInflight: "inflight_bytes",
	FSegQLen: "t_segqlen", FFlowID: "flowid", FFlowType: "flowtype",
}

// requiredRecord is the set of Num indexes (and address keys) a JSON
// record must have: every SIFTR column.
const requiredRecord = (uint64(1)<<NumFields - 1) &^ (1<<FDir | 1<<FTime | 1<<FLAddr | 1<<FFAddr)

func (r *Reader) parseJSON(b []byte) error {
	if b[0] != '{' {
		return r.lineErr("not a JSON object in a JSON lines log", b)
	}
	if err := r.js.scan(b); err != nil {
		return r.lineErr(err.Error(), b)
	}
	var typ []byte
	for _, f := range r.js.fields {
		if string(f.Key) == "type" {
			typ = f.Value
			break
		}
	}
	switch string(typ) {
	case "record":
		if reason := r.jsonRecord(); reason != "" {
			return r.lineErr(reason, b)
		}
		r.kind = KindRecord
	case "enable":
		if err := r.setEnable(r.jsonKV()); err != nil {
			return r.lineErr(err.Error(), b)
		}
		r.kind = KindEnable
	case "disable":
		flows, err := r.jsonFlows()
		if err == nil {
			kv := r.jsonKV()
			for i := range kv {
				if kv[i].Key == "flow_list" {
					kv[i].Value = FlowListText(flows)
				}
			}
			err = r.setDisable(kv, flows)
		}
		if err != nil {
			return r.lineErr(err.Error(), b)
		}
		r.kind = KindDisable
	case "":
		return r.lineErr("no \"type\" key", b)
	default:
		return r.lineErr(fmt.Sprintf("unknown type %q", typ), b)
	}
	return nil
}

// jsonKV copies the fields of an enable or disable line as KVs, skipping
// "type"; a flow_list array is rendered in the text format.
func (r *Reader) jsonKV() []KV {
	kv := make([]KV, 0, len(r.js.fields))
	for _, f := range r.js.fields {
		k := string(f.Key)
		if k == "type" {
			continue
		}
		if k == "flow_list" {
			kv = append(kv, KV{k, ""}) // rendered by the caller from jsonFlows
			continue
		}
		kv = append(kv, KV{k, string(f.Value)})
	}
	return kv
}

// jsonFlows parses a JSON disable line's flow_list and renders it into the
// flow_list KV as text. It returns a non-nil slice when the key is present.
func (r *Reader) jsonFlows() ([]FlowName, error) {
	var raw []byte
	found := false
	for _, f := range r.js.fields {
		if string(f.Key) == "flow_list" {
			if f.Kind != JSONArray {
				return nil, errors.New("flow_list is not an array")
			}
			raw, found = f.Value, true
		}
	}
	if !found {
		return nil, errors.New("no flow_list")
	}
	flows := []FlowName{}
	p := skipWS(raw, 1)
	var sub jsonScanner
	for p < len(raw) && raw[p] != ']' {
		end, err := skipNested(raw, p)
		if err != nil || raw[p] != '{' {
			return nil, errors.New("bad flow_list")
		}
		if err := sub.scan(raw[p:end]); err != nil {
			return nil, fmt.Errorf("flow_list: %v", err)
		}
		var fl FlowName
		var la, ra string
		var lp, rp uint64
		got := 0
		for _, f := range sub.fields {
			switch string(f.Key) {
			case "local_addr":
				la, got = string(f.Value), got|1
			case "remote_addr":
				ra, got = string(f.Value), got|2
			case "local_port":
				lp, err = strconv.ParseUint(string(f.Value), 10, 16)
				got |= 4
			case "remote_port":
				rp, err = strconv.ParseUint(string(f.Value), 10, 16)
				got |= 8
			}
			if err != nil {
				return nil, errors.New("flow_list: bad port")
			}
		}
		l, err1 := parseAddrPort(la+";"+strconv.FormatUint(lp, 10), ";")
		rm, err2 := parseAddrPort(ra+";"+strconv.FormatUint(rp, 10), ";")
		if got != 15 || err1 != nil || err2 != nil {
			return nil, errors.New("flow_list: bad entry")
		}
		fl.Local, fl.Remote = l, rm
		flows = append(flows, fl)
		p = skipWS(raw, end)
		if p < len(raw) && raw[p] == ',' {
			p = skipWS(raw, p+1)
		}
	}
	return flows, nil
}

// FlowListText renders flows as the text format's flow_list value.
func FlowListText(flows []FlowName) string {
	var b []byte
	for _, f := range flows {
		b = f.Local.Addr().AppendTo(b)
		b = append(b, ';')
		b = strconv.AppendUint(b, uint64(f.Local.Port()), 10)
		b = append(b, '-')
		b = f.Remote.Addr().AppendTo(b)
		b = append(b, ';')
		b = strconv.AppendUint(b, uint64(f.Remote.Port()), 10)
		b = append(b, ',')
	}
	return string(b)
}

// jsonRecord fills r.rec from the scanned fields; it returns what is
// wrong, or "".
func (r *Reader) jsonRecord() string {
	rec := &r.rec
	rec.Extra = Extra{}
	rec.TimeNS = 0
	rec.Fields = r.js.fields
	var got uint64
	var la, ra []byte
	haveTime := false
	for i, f := range r.js.fields {
		idx := -1
		if i < len(r.js.slot) && bytes.Equal(r.js.slot[i].key, f.Key) {
			idx = r.js.slot[i].idx
		} else {
			var ok bool
			if idx, ok = jsonRecordKeys[string(f.Key)]; !ok {
				idx = jkOther
			}
			if i < len(r.js.slot) {
				r.js.slot[i] = slotCache{append(r.js.slot[i].key[:0], f.Key...), idx}
			} else if i < 128 {
				r.js.slot = append(r.js.slot, slotCache{append([]byte(nil), f.Key...), idx})
			}
		}
		switch {
		case idx < NumFields:
			v, ok := parseU64(f)
			if !ok {
				return fmt.Sprintf("%s: not an unsigned integer", f.Key)
			}
			rec.Num[idx] = v
			got |= 1 << idx
		case idx == jkDirection:
			switch string(f.Value) {
			case "in":
				rec.Dir = 'i'
			case "out":
				rec.Dir = 'o'
			default:
				return "bad direction"
			}
			got |= 1 << FDir
		case idx == jkTime:
			us, ok := parseSecUsec(f)
			if !ok {
				return "bad time"
			}
			rec.TimeUS, haveTime = us, true
		case idx == jkTimeNS:
			v, ok := parseI64(f)
			if !ok {
				return "bad time_ns"
			}
			rec.TimeNS = v
			rec.Extra.Has |= HasTimeNS
		case idx == jkLocalAddr:
			la = f.Value
		case idx == jkRemoteAddr:
			ra = f.Value
		case idx == jkStaleness:
			v, ok := parseI64(f)
			if !ok {
				return "bad staleness_ns"
			}
			rec.Extra.StalenessNS = v
			rec.Extra.Has |= HasStaleness
		case idx == jkRetrans:
			v, ok := parseU64(f)
			if !ok {
				return "bad total_retrans"
			}
			rec.Extra.TotalRetrans = v
			rec.Extra.Has |= HasRetrans
		case idx == jkCong || idx == jkStateSource || idx == jkCAState:
			if f.Kind != JSONString {
				return fmt.Sprintf("%s: not a string", f.Key)
			}
			s := r.internStr(f.Value)
			switch idx {
			case jkCong:
				rec.Extra.Cong = s
				rec.Extra.Has |= HasCong
			case jkStateSource:
				rec.Extra.StateSource = s
				rec.Extra.Has |= HasStateSource
			default:
				rec.Extra.CAState = s
				rec.Extra.Has |= HasCAState
			}
		}
	}
	if !haveTime {
		if rec.Extra.Has&HasTimeNS == 0 {
			return "no time"
		}
		rec.TimeUS = floorDiv(rec.TimeNS, 1000)
	}
	if rec.Extra.Has&HasTimeNS == 0 {
		rec.TimeNS = rec.TimeUS * 1000
	}
	if miss := (requiredRecord | 1<<FDir) &^ got; miss != 0 {
		return "no " + jsonKeyNames[bits.TrailingZeros64(miss)]
	}
	if la == nil || ra == nil {
		return "no local_addr or remote_addr"
	}
	a1, ok1 := r.addr(la)
	a2, ok2 := r.addr(ra)
	if !ok1 || !ok2 {
		return "bad address"
	}
	if rec.Num[FLPort] > 65535 || rec.Num[FFPort] > 65535 {
		return "bad port"
	}
	rec.Local = netip.AddrPortFrom(a1, uint16(rec.Num[FLPort]))
	rec.Remote = netip.AddrPortFrom(a2, uint16(rec.Num[FFPort]))
	return ""
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
}

// parseU64 parses a JSON number field as an unsigned integer.
func parseU64(f Field) (uint64, bool) {
	if f.Kind != JSONNumber {
		return 0, false
	}
	v, q, ok := digits(f.Value, 0)
	return v, ok && q == len(f.Value)
}

// parseI64 parses a JSON number field as a signed integer.
func parseI64(f Field) (int64, bool) {
	if f.Kind != JSONNumber {
		return 0, false
	}
	b := f.Value
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	v, q, ok := digits(b, 0)
	if !ok || q != len(b) || v > math.MaxInt64 {
		return 0, false
	}
	if neg {
		return -int64(v), true
	}
	return int64(v), true
}

// parseSecUsec parses a JSON time in seconds ("1700000000.123456", or any
// JSON number) as µs since the epoch.
func parseSecUsec(f Field) (int64, bool) {
	if f.Kind != JSONNumber {
		return 0, false
	}
	b := f.Value
	sec, q, ok := digits(b, 0)
	if ok && q < len(b) && b[q] == '.' && len(b)-q-1 == 6 && sec < 1<<40 {
		usec, q2, ok := digits(b, q+1)
		if ok && q2 == len(b) {
			return int64(sec)*1e6 + int64(usec), true
		}
	}
	if ok && q == len(b) && sec < 1<<40 {
		return int64(sec) * 1e6, true
	}
	x, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsNaN(x) || math.Abs(x) > 1<<40 {
		return 0, false
	}
	return int64(math.Floor(x*1e6 + 0.5)), true
}

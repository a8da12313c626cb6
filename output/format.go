package output

import (
	"fmt"
	"math/bits"
	"time"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/tcp"
)

// Format turns the start of a log, its records and its end into bytes.
// Each method appends to dst and returns the extended slice; none allocates
// when dst has room. A Format may cache what it formatted last, so one value
// is for one goroutine: SIFTR(), JSONL() and FormatByName return a new one
// for each caller.
type Format interface {
	// AppendHeader appends the line written when logging starts (SIFTR's enable line).
	AppendHeader(dst []byte, h *Header) []byte
	// AppendRecord appends one data line.
	AppendRecord(dst []byte, r *correlate.Record) []byte
	// AppendFooterStart, AppendFlow and AppendFooterEnd append the line
	// written when logging stops (SIFTR's disable line) in parts, so that
	// a long flow list is streamed: the line up to its flow list, flow i
	// of the list (from 0), and the line's end. AppendFooter appends all
	// of it at once.
	AppendFooterStart(dst []byte, f *Footer) []byte
	AppendFlow(dst []byte, i int, fl *correlate.Flow) []byte
	AppendFooterEnd(dst []byte) []byte
}

// AppendFooter appends f's disable line, whole, in format fm.
func AppendFooter(fm Format, dst []byte, f *Footer) []byte {
	dst = fm.AppendFooterStart(dst, f)
	for i := range f.Flows {
		dst = fm.AppendFlow(dst, i, &f.Flows[i])
	}
	return fm.AppendFooterEnd(dst)
}

// Header is what the enable line says. The system name is always Linux.
type Header struct {
	// Time is when logging started.
	Time time.Time
	// SysVer is the kernel version as (major<<16)+(minor<<8)+patch; see SysVer.
	SysVer uint32
	// IPMode is SIFTR's ipmode: 4 for IPv4 only, 6 when IPv6 is handled too.
	IPMode uint
	// StateSource is how the records' state is read (JSON lines only: the
	// SIFTR enable line has no field for it).
	StateSource tcp.Source
}

// Footer is what the disable line says.
type Footer struct {
	// Time is when logging stopped.
	Time time.Time
	// Counts are the final packet totals.
	Counts correlate.Counts
	// Flows are the flows seen, in the order they are to be listed.
	Flows []correlate.Flow
}

// SIFTRVersion is the SIFTR log format version this package writes.
const SIFTRVersion = "1.3.0"

// SysName is the enable line's sysname.
const SysName = "Linux"

// Names of the formats FormatByName knows.
const (
	NameSIFTR = "siftr"
	NameJSONL = "jsonl"
)

// FormatByName returns the format called name: "siftr" or "jsonl".
func FormatByName(name string) (Format, error) {
	switch name {
	case NameSIFTR:
		return SIFTR(), nil
	case NameJSONL:
		return JSONL(), nil
	}
	return nil, fmt.Errorf("output: unknown format %q (want %q or %q)", name, NameSIFTR, NameJSONL)
}

// SysVer turns a kernel release string ("6.18.44-fc-v669", as uname -r
// prints it) into the enable line's sysver, (major<<16)+(minor<<8)+patch
// (397868 for 6.18.44). Each part is the leading digits of its dot-separated
// field (missing or non-numeric parts are 0); minor and patch are clamped to
// 255 and major to 151, so the value never exceeds 7 decimal digits, which
// readers of the format rely on.
func SysVer(release string) uint32 {
	var parts [3]uint32
	rest := release
	for i := range parts {
		var v uint32
		j := 0
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			if v < 1000 {
				v = v*10 + uint32(rest[j]-'0')
			}
			j++
		}
		parts[i] = min(v, 255)
		if j == 0 || j >= len(rest) || rest[j] != '.' {
			break
		}
		rest = rest[j+1:]
	}
	return min(parts[0], 151)<<16 | parts[1]<<8 | parts[2]
}

// appendUsec6 appends usec (0..999999) as exactly six digits.
func appendUsec6(dst []byte, usec int64) []byte {
	var b [6]byte
	u := uint32(usec)
	for i := 5; i >= 0; i-- {
		b[i] = byte('0' + u%10)
		u /= 10
	}
	return append(dst, b[:]...)
}

// appendSecUsec appends ns as SIFTR's "%jd.%06ld".
func appendSecUsec(dst []byte, ns int64) []byte {
	sec, usec := splitTime(ns)
	dst = appendInt(dst, sec)
	dst = append(dst, '.')
	return appendUsec6(dst, usec)
}

// timeNanos returns t as nanoseconds since the epoch (0 for the zero Time).
func timeNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// pow10 holds 10^i for i = 0..19.
var pow10 = [20]uint64{
	1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9,
	1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19,
}

const digitPairs = "00010203040506070809101112131415161718192021222324252627282930313233343536373839" +
	"40414243444546474849505152535455565758596061626364656667686970717273747576777879" +
	"8081828384858687888990919293949596979899"

// appendUint appends v in decimal, like strconv.AppendUint(dst, v, 10) but
// writing the digits in place (it is the hot path of every format).
func appendUint(dst []byte, v uint64) []byte {
	if v < 10 {
		return append(dst, byte('0'+v))
	}
	n := int(uint(bits.Len64(v))*1233) >> 12 // floor(log10(v)) or one less
	if v >= pow10[n] {
		n++
	}
	l := len(dst)
	if cap(dst)-l < n {
		dst = append(dst, make([]byte, n)...)
	} else {
		dst = dst[:l+n]
	}
	i := l + n
	for v >= 100 {
		q := v / 100
		r := (v - q*100) * 2
		i -= 2
		dst[i], dst[i+1] = digitPairs[r], digitPairs[r+1]
		v = q
	}
	if v >= 10 {
		r := v * 2
		dst[i-2], dst[i-1] = digitPairs[r], digitPairs[r+1]
	} else {
		dst[i-1] = byte('0' + v)
	}
	return dst
}

// appendInt appends v in decimal.
func appendInt(dst []byte, v int64) []byte {
	if v < 0 {
		return appendUint(append(dst, '-'), uint64(-v)) // -MinInt64 wraps to 1<<63: still right as uint64
	}
	return appendUint(dst, uint64(v))
}

// Package siftrlog reads SIFTR 1.3.0 logs, strictly: it is the reference
// reader the tests, the demo and the benchmarks check the writer against.
package siftrlog

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Data field indexes (0-based) of a data line.
const (
	FDir = iota
	FTime
	FLAddr
	FLPort
	FFAddr
	FFPort
	FSsthresh
	FCwnd
	FFlags2
	FSndWnd
	FRcvWnd
	FSndScale
	FRcvScale
	FState
	FMSS
	FSRTT
	FSACK
	FFlags
	FRTO
	FSndBufHi
	FSndBufCC
	FRcvBufHi
	FRcvBufCC
	FInflight
	FSegQLen
	FFlowID
	FFlowType
	NumFields
)

var (
	enableKeys  = []string{"enable_time_secs", "enable_time_usecs", "siftrver", "sysname", "sysver", "ipmode"}
	disableKeys = []string{"disable_time_secs", "disable_time_usecs", "num_inbound_tcp_pkts", "num_outbound_tcp_pkts",
		"total_tcp_pkts", "num_inbound_skipped_pkts_malloc", "num_outbound_skipped_pkts_malloc",
		"num_inbound_skipped_pkts_tcpcb", "num_outbound_skipped_pkts_tcpcb",
		"num_inbound_skipped_pkts_inpcb", "num_outbound_skipped_pkts_inpcb",
		"total_skipped_tcp_pkts", "flow_list"}
)

// Line is one data line.
type Line struct {
	Dir           byte // 'i' or 'o'
	TimeUS        int64
	Local, Remote netip.AddrPort
	// Num holds the numeric fields by index (FSsthresh..FFlowType); the
	// others are zero.
	Num [NumFields]uint64
}

// Log is a parsed log: one or more runs, each an enable line, data lines
// and a disable line.
type Log struct {
	Enable  []map[string]string
	Lines   []Line
	Disable []map[string]string
	// Flows is the last disable line's flow list.
	Flows []string
}

// Parse reads a whole log and checks the shape of every line.
func Parse(r io.Reader) (*Log, error) {
	l := &Log{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	n := 0
	for sc.Scan() {
		n++
		s := sc.Text()
		switch {
		case strings.HasPrefix(s, "enable_time_secs="):
			m, err := keyValues(s, enableKeys)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			l.Enable = append(l.Enable, m)
		case strings.HasPrefix(s, "disable_time_secs="):
			m, err := keyValues(s, disableKeys)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			l.Disable = append(l.Disable, m)
			fl := m["flow_list"]
			if fl != "" && !strings.HasSuffix(fl, ",") {
				return nil, fmt.Errorf("line %d: flow_list does not end with a comma", n)
			}
			l.Flows = strings.Split(strings.TrimSuffix(fl, ","), ",")
			if fl == "" {
				l.Flows = nil
			}
		default:
			ln, err := parseData(s)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w: %q", n, err, s)
			}
			l.Lines = append(l.Lines, ln)
		}
	}
	return l, sc.Err()
}

func keyValues(s string, keys []string) (map[string]string, error) {
	parts := strings.Split(s, "\t")
	if len(parts) != len(keys) {
		return nil, fmt.Errorf("%d tab-separated fields, want %d", len(parts), len(keys))
	}
	m := map[string]string{}
	for i, p := range parts {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k != keys[i] {
			return nil, fmt.Errorf("field %d is %q, want key %s", i+1, p, keys[i])
		}
		m[k] = v
	}
	return m, nil
}

func parseData(s string) (Line, error) {
	var ln Line
	f := strings.Split(s, ",")
	if len(f) != NumFields {
		return ln, fmt.Errorf("%d fields, want %d", len(f), NumFields)
	}
	if f[FDir] != "i" && f[FDir] != "o" {
		return ln, fmt.Errorf("bad direction")
	}
	ln.Dir = f[FDir][0]
	sec, usec, ok := strings.Cut(f[FTime], ".")
	if !ok || len(usec) != 6 {
		return ln, fmt.Errorf("bad time")
	}
	si, err1 := strconv.ParseInt(sec, 10, 64)
	ui, err2 := strconv.ParseInt(usec, 10, 64)
	if err1 != nil || err2 != nil {
		return ln, fmt.Errorf("bad time")
	}
	ln.TimeUS = si*1e6 + ui
	for i := FLPort; i < NumFields; i++ {
		if i == FFAddr {
			continue
		}
		v, err := strconv.ParseUint(f[i], 10, 32)
		if err != nil {
			return ln, fmt.Errorf("field %d: %v", i+1, err)
		}
		ln.Num[i] = v
	}
	la, err1 := netip.ParseAddr(f[FLAddr])
	fa, err2 := netip.ParseAddr(f[FFAddr])
	if err1 != nil || err2 != nil || la.Zone() != "" || fa.Zone() != "" {
		return ln, fmt.Errorf("bad address")
	}
	if ln.Num[FLPort] > 65535 || ln.Num[FFPort] > 65535 {
		return ln, fmt.Errorf("bad port")
	}
	ln.Local = netip.AddrPortFrom(la, uint16(ln.Num[FLPort]))
	ln.Remote = netip.AddrPortFrom(fa, uint16(ln.Num[FFPort]))
	return ln, nil
}

// Uint returns a numeric key of the last disable line (0 if absent).
func (l *Log) Uint(key string) uint64 {
	if len(l.Disable) == 0 {
		return 0
	}
	v, _ := strconv.ParseUint(l.Disable[len(l.Disable)-1][key], 10, 64)
	return v
}

// Count returns the number of data lines in direction dir ('i' or 'o').
func (l *Log) Count(dir byte) int {
	n := 0
	for i := range l.Lines {
		if l.Lines[i].Dir == dir {
			n++
		}
	}
	return n
}

// Ordered reports whether the data lines are in non-decreasing time order.
func (l *Log) Ordered() bool {
	return slices.IsSortedFunc(l.Lines, func(a, b Line) int { return int(a.TimeUS - b.TimeUS) })
}

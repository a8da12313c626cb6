// Package siftrlog reads SIFTR 1.3.0 logs: the text format siftr-probe
// and FreeBSD's siftr(4) write, and siftr-probe's JSON lines.
//
// Reader streams a log line by line without allocating per data line and
// tells malformed lines apart from read errors, so that a caller can count
// the former and go on; Open adds gzip and zstd decompression. Parse is
// the strict reader on top of it that the tests, the demo and the
// benchmarks check the writer against: it fails on the first malformed
// line and keeps the whole log in memory.
package siftrlog

import (
	"errors"
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

// Line is one data line.
type Line struct {
	Dir           byte // 'i' or 'o'
	TimeUS        int64
	Local, Remote netip.AddrPort
	// Num holds the numeric fields by index (FLPort, FFPort,
	// FSsthresh..FFlowType); the others are zero.
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

// Parse reads a whole log, text or JSON lines, and checks the shape of
// every line: the first malformed one is an error.
func Parse(r io.Reader) (*Log, error) {
	l := &Log{}
	rd := NewReader(r)
	for {
		err := rd.Next()
		if errors.Is(err, io.EOF) {
			return l, nil
		}
		var le *LineError
		if errors.As(err, &le) {
			return nil, le
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", rd.LineNumber()+1, err)
		}
		switch rd.Kind() {
		case KindEnable:
			l.Enable = append(l.Enable, kvMap(rd.Enable().Fields))
		case KindDisable:
			d := rd.Disable()
			l.Disable = append(l.Disable, kvMap(d.Fields))
			l.Flows = nil
			if d.FlowList != "" {
				l.Flows = strings.Split(strings.TrimSuffix(d.FlowList, ","), ",")
			}
		case KindRecord:
			l.Lines = append(l.Lines, rd.Record().Line)
		}
	}
}

func kvMap(kv []KV) map[string]string {
	m := make(map[string]string, len(kv))
	for _, f := range kv {
		m[f.Key] = f.Value
	}
	return m
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

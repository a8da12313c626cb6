package output

import (
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sys/unix"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/pcaptest"
	"github.com/siftr-probe/siftr-probe/tcp"
)

// openPcapTest opens a pcap file in a temporary directory.
func openPcapTest(t *testing.T, all bool) (*Pcap, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "siftr.pcapng")
	p, err := OpenPcap(&PcapConfig{Path: path, Iface: "veth-a", Filter: "tcp port 5201", Application: "siftr-probe test", All: all})
	if err != nil {
		t.Fatal(err)
	}
	return p, path
}

// readPcap reads a pcap file back; tcpdump, where installed, must read it too.
func readPcap(t *testing.T, path string) *pcaptest.File {
	t.Helper()
	f, err := pcaptest.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if f.IfName != "veth-a" || f.IfFilter != "tcp port 5201" || f.LinkType != 101 {
		t.Errorf("interface %q filter %q link type %d", f.IfName, f.IfFilter, f.LinkType)
	}
	lines, err := pcaptest.Tcpdump(path)
	switch {
	case errors.Is(err, exec.ErrNotFound):
		if os.Getenv("CI") == "true" {
			t.Fatal("tcpdump is not installed (apt-get install tcpdump); under CI=true this test does not skip")
		}
	case err != nil:
		t.Fatal(err)
	case len(lines) != len(f.Packets):
		t.Errorf("tcpdump printed %d lines for %d packets:\n%s", len(lines), len(f.Packets), strings.Join(lines, "\n"))
	}
	return f
}

// wantPacket is what a record's (or a packet's) block must decode to.
func wantPacket(r *correlate.Record) pcaptest.Packet {
	p := &r.Pkt
	hdr := 40
	if !p.Src.Addr().Unmap().Is4() {
		hdr = 60
	}
	w := pcaptest.Packet{
		Time: p.Time, CapLen: hdr, Len: hdr + int(p.PayloadLen), Dir: p.Dir, HasDir: true,
		Src: netip.AddrPortFrom(p.Src.Addr().Unmap(), p.Src.Port()), Dst: netip.AddrPortFrom(p.Dst.Addr().Unmap(), p.Dst.Port()),
		Seq: p.Seq, Ack: p.Ack, Flags: p.Flags, Window: p.Window, PayloadLen: int(p.PayloadLen),
		IPv4ChecksumOK: hdr == 40,
		TCPChecksumOK:  p.PayloadLen == 0,
	}
	if r.Snap != nil {
		w.Comments = []string{string(AppendPcapComment(nil, r))}
	}
	return w
}

func comparePackets(t *testing.T, got []pcaptest.Packet, want []pcaptest.Packet) {
	t.Helper()
	for i := range got {
		got[i].Data = nil
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.AddrPort{})); diff != "" {
		t.Errorf("packets (-want +got):\n%s", diff)
	}
}

// TestAppendEPB checks every golden record's block as two pcapng readers
// and tcpdump see it: synthesized headers, lengths, time, direction,
// comment.
func TestAppendEPB(t *testing.T) {
	p, path := openPcapTest(t, false)
	buf := append([]byte(nil), p.header...)
	var want []pcaptest.Packet
	for _, nr := range goldenRecords() {
		r := nr.rec
		buf = AppendEPB(buf, &r)
		want = append(want, wantPacket(&r))
		r.Snap = nil // a packet without a record: no comment
		buf = AppendEPB(buf, &r)
		want = append(want, wantPacket(&r))
	}
	if len(buf)%4 != 0 {
		t.Errorf("%d bytes: blocks are not padded to 32 bits", len(buf))
	}
	if n := wholeBlocks(buf, len(buf)); n != len(buf) {
		t.Errorf("wholeBlocks = %d of %d", n, len(buf))
	}
	if n := wholeBlocks(buf, len(buf)-1); n >= len(buf) || n == 0 {
		t.Errorf("wholeBlocks of a cut buffer = %d", n)
	}
	p.Close()
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	f := readPcap(t, path)
	comparePackets(t, f.Packets, want)
}

// TestPcapComment checks the comment's keys and values.
func TestPcapComment(t *testing.T) {
	r := goldenRecords()[0].rec
	r.Snap.Info.SndCwnd, r.Snap.Info.SndMSS, r.Snap.Info.SndSsthresh, r.Snap.Info.RTT = 10, 1448, 0x7fffffff, 23
	r.Snap.Cookie, r.Snap.Source = 476312, tcp.SourceExact
	r.Snap.State = tcp.StateFinWait1
	r.Snap.Time = r.Pkt.Time
	want := "snd_cwnd=14480 snd_ssthresh=1073725440 srtt_us=23 flowid=476312 tcp_state=FIN_WAIT1 state_source=exact staleness_ns=0"
	if got := string(AppendPcapComment(nil, &r)); got != want {
		t.Errorf("comment\n%s\nwant\n%s", got, want)
	}
}

// TestAppendEPBNoAlloc checks that formatting a block allocates nothing.
func TestAppendEPBNoAlloc(t *testing.T) {
	r := goldenRecords()[0].rec
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() { buf = AppendEPB(buf[:0], &r) }); n != 0 {
		t.Errorf("%v allocations per block", n)
	}
}

// TestAppendEPBBigBuffer checks a GSO buffer larger than an IP length can
// say: the IP length saturates, the block's original length does not.
func TestAppendEPBBigBuffer(t *testing.T) {
	r := goldenRecords()[0].rec
	r.Pkt.PayloadLen = 200000
	b := AppendEPB(nil, &r)
	if got := uint32(b[24]) | uint32(b[25])<<8 | uint32(b[26])<<16 | uint32(b[27])<<24; got != 200040 {
		t.Errorf("original length %d, want 200040", got)
	}
	if got := int(b[28+2])<<8 | int(b[28+3]); got != 0xffff {
		t.Errorf("IPv4 total length %d, want 65535", got)
	}
}

// TestWriterPcap writes records with a pcap file beside the log: one block
// per record, in the log's order, with the record's state.
func TestWriterPcap(t *testing.T) {
	p, path := openPcapTest(t, false)
	w := openTest(t, &WriterConfig{Path: filepath.Join(t.TempDir(), "log"), Workers: 2, Delay: -1, Pcap: p})
	if err := w.Start(&Header{}); err != nil {
		t.Fatal(err)
	}
	golden := goldenRecords()
	var want []pcaptest.Packet
	for i := range 40 {
		r := golden[i%len(golden)].rec
		snap := *r.Snap
		r.Snap = &snap
		r.Pkt.Time = int64(1e18 + i*1000)
		r.Snap.Time = r.Pkt.Time + int64(i)
		if !w.Submit(i%2, []correlate.Record{r}, r.Pkt.Time) {
			t.Fatal("Submit refused")
		}
		want = append(want, wantPacket(&r))
	}
	if err := w.Close(nil); err != nil {
		t.Fatal(err)
	}
	st := w.Stats()
	if st.Pcap.Packets != 40 || st.Pcap.Stated != 40 || st.Pcap.Lost != 0 || st.Records != 40 {
		t.Errorf("stats %+v, records %d", st.Pcap, st.Records)
	}
	fi, _ := os.Stat(path)
	if fi.Size() != int64(st.Pcap.Bytes) {
		t.Errorf("file %d bytes, stats %d", fi.Size(), st.Pcap.Bytes)
	}
	comparePackets(t, readPcap(t, path).Packets, want)
}

// TestWriterPcapAll hands the writer every captured packet and, as the
// lookups would, records for some of them, later and out of step: every
// packet is written once, in time order, the logged ones with their state.
// Two packets of one time (lo: a packet leaving one socket and reaching
// the other) are told apart by their direction.
func TestWriterPcapAll(t *testing.T) {
	p, path := openPcapTest(t, true)
	w := openTest(t, &WriterConfig{Path: filepath.Join(t.TempDir(), "log"), Workers: 2, Pcap: p, Delay: time.Microsecond})
	if err := w.Start(&Header{}); err != nil {
		t.Fatal(err)
	}
	base := goldenRecords()[0].rec
	var pkts [2][]tcp.Packet
	var recs [2][]correlate.Record
	var want []pcaptest.Packet
	for i := range 300 {
		r := base
		snap := *base.Snap
		r.Snap = &snap
		r.Pkt.Time = int64(1e18 + (i/2)*1000) // two packets per time
		r.Pkt.Seq = uint32(i)
		r.Pkt.Dir = tcp.Direction(i % 2)
		snap.Time = r.Pkt.Time + 500
		snap.Info.SndCwnd = uint32(i)
		wk := (i / 2) % 2
		pkts[wk] = append(pkts[wk], r.Pkt)
		if i%3 == 0 { // logged
			recs[wk] = append(recs[wk], r)
			want = append(want, wantPacket(&r))
		} else {
			r.Snap = nil
			want = append(want, wantPacket(&r))
		}
	}
	// Packets first, in blocks, as the capture hands them over; records
	// after, as their lookups finish.
	for wk := range 2 {
		for off := 0; off < len(pkts[wk]); off += 16 {
			blk := pkts[wk][off:min(off+16, len(pkts[wk]))]
			if !w.SubmitPackets(wk, blk, blk[len(blk)-1].Time) {
				t.Fatal("SubmitPackets refused")
			}
		}
	}
	time.Sleep(20 * time.Millisecond) // the packets wait for the records' watermarks
	if st := w.Stats(); st.Pcap.Packets != 0 {
		t.Errorf("%d packets written before any record watermark", st.Pcap.Packets)
	}
	for wk := range 2 {
		for off := 0; off < len(recs[wk]); off += 7 {
			blk := recs[wk][off:min(off+7, len(recs[wk]))]
			if !w.Submit(wk, blk, blk[len(blk)-1].Pkt.Time) {
				t.Fatal("Submit refused")
			}
		}
		w.Advance(wk, 2e18)
		w.AdvancePackets(wk, 2e18)
	}
	waitFor(t, "packets written", func() bool { return w.Stats().Pcap.Held == 0 && w.Stats().Held == 0 })
	if err := w.Close(nil); err != nil {
		t.Fatal(err)
	}
	st := w.Stats().Pcap
	if st.Packets != 300 || st.Stated != 100 || st.Unmatched != 0 || st.Dropped != 0 || st.Late != 0 || st.Forced != 0 {
		t.Errorf("stats %+v", st)
	}
	got := readPcap(t, path).Packets
	// Within one time the order is the capture's; across, time order.
	comparePackets(t, got, want)
}

// TestWriterPcapAllQueueFull fills the packet queue: the packets refused
// are counted, the watermark still moves, and nothing blocks.
func TestWriterPcapAllQueueFull(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.pcapng")
	p, err := OpenPcap(&PcapConfig{Path: path, Iface: "veth-a", All: true, QueueLen: 2, QueuePackets: 8})
	if err != nil {
		t.Fatal(err)
	}
	w := openTest(t, &WriterConfig{Path: filepath.Join(t.TempDir(), "log"), Workers: 1, Pcap: p, Delay: -1})
	// Not started: nothing is taken from the queue.
	blk := make([]tcp.Packet, 4)
	for i := range blk {
		blk[i] = goldenRecords()[0].rec.Pkt
		blk[i].Time = int64(i + 1)
	}
	ok := 0
	for range 5 {
		if w.SubmitPackets(0, blk, 4) {
			ok++
		}
	}
	if ok != 2 || w.Stats().Pcap.Dropped != 12 {
		t.Errorf("%d blocks taken, %d packets dropped; want 2 and 12", ok, w.Stats().Pcap.Dropped)
	}
	if err := w.Start(&Header{}); err != nil {
		t.Fatal(err)
	}
	w.Advance(0, 10)
	w.Close(nil)
	if st := w.Stats().Pcap; st.Packets != 8 {
		t.Errorf("%d packets written, want 8", st.Packets)
	}
	if w.SubmitPackets(0, blk, 20) || w.Stats().Pcap.Dropped != 16 {
		t.Errorf("SubmitPackets after Close: dropped %d", w.Stats().Pcap.Dropped)
	}
}

// TestWriterPcapReopen rotates both files: each pcap file is valid on its
// own, and with Pcap.All off they switch at the same record as the log.
func TestWriterPcapReopen(t *testing.T) {
	dir := t.TempDir()
	pp := filepath.Join(dir, "p.pcapng")
	lp := filepath.Join(dir, "log")
	p, err := OpenPcap(&PcapConfig{Path: pp, Iface: "veth-a", Filter: "tcp port 5201"})
	if err != nil {
		t.Fatal(err)
	}
	w := openTest(t, &WriterConfig{Path: lp, Workers: 1, Delay: -1, Pcap: p})
	if err := w.Start(&Header{}); err != nil {
		t.Fatal(err)
	}
	r := goldenRecords()[0].rec
	for i := range 30 {
		r.Pkt.Time = int64(i + 1)
		w.Submit(0, []correlate.Record{r}, r.Pkt.Time)
		if i == 11 {
			waitFor(t, "records formatted", func() bool { return w.Stats().Records+uint64(w.Stats().Held) == 12 && w.Stats().QueueRecords == 0 })
			for _, f := range []string{pp, lp} {
				if err := os.Rename(f, f+".1"); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Reopen(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Close(nil); err != nil {
		t.Fatal(err)
	}
	old, cur := readPcap(t, pp+".1"), readPcap(t, pp)
	lo, _ := os.ReadFile(lp + ".1")
	lc, _ := os.ReadFile(lp)
	nlo, nlc := strings.Count(string(lo), "\n")-1, strings.Count(string(lc), "\n")
	if len(old.Packets) != nlo || len(cur.Packets) != nlc || nlo+nlc != 30 {
		t.Errorf("pcap files %d and %d packets, logs %d and %d lines", len(old.Packets), len(cur.Packets), nlo, nlc)
	}
}

// TestOpenPcapRules checks that the pcap file follows the log's rules: no
// symbolic link, no FIFO, a second writer refused; and that it is replaced.
func TestOpenPcapRules(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	link := filepath.Join(dir, "link")
	if err := os.WriteFile(target, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPcap(&PcapConfig{Path: link}); err == nil || !strings.Contains(err.Error(), "pcap file "+link+" is a symbolic link") {
		t.Errorf("symlink: %v", err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPcap(&PcapConfig{Path: fifo}); err == nil || !strings.Contains(err.Error(), "named pipe") {
		t.Errorf("FIFO: %v", err)
	}
	if _, err := OpenPcap(&PcapConfig{Path: "-"}); err == nil {
		t.Error("standard output accepted")
	}
	p1, err := OpenPcap(&PcapConfig{Path: target})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); len(b) != 0 {
		t.Errorf("an existing file is not replaced: %q", b)
	}
	if _, err := OpenPcap(&PcapConfig{Path: target}); err == nil || !strings.Contains(err.Error(), "pcap file "+target+" is locked by another process") || !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Errorf("second writer: %v", err)
	}
	p1.Close()
}

// TestIntegrationWriterPcapDiskFull fills the pcap file's file system:
// the file keeps whole blocks and stays readable, Packets and Lost count
// exactly what is and is not in it, the error is reported once and by
// PcapErr, and the log is not affected.
func TestIntegrationWriterPcapDiskFull(t *testing.T) {
	dir := smallFS(t, "64k")
	pp := filepath.Join(dir, "p.pcapng")
	p, err := OpenPcap(&PcapConfig{Path: pp, Iface: "veth-a", Filter: "tcp port 5201"})
	if err != nil {
		t.Fatal(err)
	}
	warned := make(chan string, 8)
	w := openTest(t, &WriterConfig{Path: filepath.Join(t.TempDir(), "log"), Workers: 1, Delay: -1, Pcap: p,
		FlushInterval: time.Hour, OnWarning: func(m string) { warned <- m }})
	if err := w.Start(&Header{}); err != nil {
		t.Fatal(err)
	}
	r := goldenRecords()[0].rec
	const n = 2000 // about 200 KB of blocks
	for i := range n {
		r.Pkt.Time = int64(i + 1)
		if !w.Submit(0, []correlate.Record{r}, r.Pkt.Time) {
			t.Fatal("Submit refused")
		}
		if i%100 == 99 {
			if err := flushNow(t, w); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Close(nil); err != nil {
		t.Fatalf("the log's Close: %v", err)
	}
	st := w.Stats()
	if st.Records != n || st.WriteErrors != 0 {
		t.Errorf("log: %d records, %d write errors", st.Records, st.WriteErrors)
	}
	if st.Pcap.WriteErrors == 0 || st.Pcap.Packets+st.Pcap.Lost != n || st.Pcap.Packets == 0 {
		t.Errorf("pcap stats %+v", st.Pcap)
	}
	if err := w.PcapErr(); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("PcapErr %v", err)
	}
	f := readPcap(t, pp)
	if uint64(len(f.Packets)) != st.Pcap.Packets {
		t.Errorf("file has %d packets, stats say %d", len(f.Packets), st.Pcap.Packets)
	}
	close(warned)
	var msgs []string
	for m := range warned {
		msgs = append(msgs, m)
	}
	if len(msgs) != 1 || !strings.Contains(msgs[0], "pcap file "+pp) {
		t.Errorf("warnings %q, want one", msgs)
	}
}

// BenchmarkAppendEPB measures formatting one packet block with its comment.
func BenchmarkAppendEPB(b *testing.B) {
	r := goldenRecords()[0].rec
	buf := make([]byte, 0, 1<<20)
	b.ReportAllocs()
	for b.Loop() {
		if len(buf) > 1<<20-512 {
			buf = buf[:0]
		}
		buf = AppendEPB(buf, &r)
	}
}

// BenchmarkSubmitPackets measures the hand-off of a capture block of 256
// packets (Writer.SubmitPackets) per packet: what --pcap-all adds to the
// capture path. The writer is not started and the benchmark takes each
// block out of the queue itself (untimed), so the figure is the hand-off
// alone: the copy into a pooled batch, the reservation and the queueing.
// Formatting the packets is the writer's (BenchmarkAppendEPB).
func BenchmarkSubmitPackets(b *testing.B) {
	path := filepath.Join(b.TempDir(), "p.pcapng")
	p, err := OpenPcap(&PcapConfig{Path: path, Iface: "x", All: true})
	if err != nil {
		b.Fatal(err)
	}
	w, err := OpenWriter(&WriterConfig{Path: os.DevNull, Workers: 1, Pcap: p})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close(nil)
	blk := make([]tcp.Packet, 256)
	for i := range blk {
		blk[i] = goldenRecords()[0].rec.Pkt
	}
	t := int64(1)
	b.ReportAllocs()
	for b.Loop() {
		for i := range blk {
			blk[i].Time = t
			t++
		}
		if !w.SubmitPackets(0, blk, t) {
			b.Fatal("refused")
		}
		b.StopTimer()
		for len(w.pcap.queue) > 0 {
			bt := <-w.pcap.queue
			w.pcap.reserved.Add(^(uint64(1)<<32 | uint64(len(bt.recs))) + 1)
			w.putBatch(bt)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(blk)), "ns/packet")
}

// TestWriterKeepPcap hands one pcap file to three writers in turn, as the
// logging cycles of a run do: the file has its section and interface
// blocks once and every writer's packets, each writer counts its own
// share, and a Reopen between two writers to a new file gives the new one
// its own blocks.
func TestWriterKeepPcap(t *testing.T) {
	dir := t.TempDir()
	p, path := openPcapTest(t, false)
	defer p.Close()
	r := goldenRecords()[0].rec
	var total uint64
	cycle := func(first int64, n int) {
		t.Helper()
		w := openTest(t, &WriterConfig{Path: filepath.Join(dir, "log"), Workers: 1, Delay: -1, Pcap: p, KeepPcap: true})
		if err := w.Start(&Header{}); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			r.Pkt.Time = first + int64(i)
			w.Submit(0, []correlate.Record{r}, r.Pkt.Time)
		}
		if err := w.Close(nil); err != nil {
			t.Fatal(err)
		}
		st := w.Stats().Pcap
		if st.Packets != uint64(n) || st.Lost != 0 {
			t.Errorf("writer from %d: pcap %+v, want %d packets", first, st, n)
		}
		total += st.Bytes
	}
	cycle(1, 10)
	cycle(100, 5)
	f := readPcap(t, path)
	b, _ := os.ReadFile(path)
	if len(f.Packets) != 15 || int(total) != len(b) || strings.Count(string(b), string(p.header)) != 1 {
		t.Errorf("%d packets, %d bytes (writers counted %d), section blocks %d times; want 15 packets, the blocks once",
			len(f.Packets), len(b), total, strings.Count(string(b), string(p.header)))
	}
	// Rotated while no writer uses it: the next writer starts a new file.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := p.Reopen(); err != nil {
		t.Fatal(err)
	}
	cycle(200, 3)
	if f := readPcap(t, path); len(f.Packets) != 3 {
		t.Errorf("new file: %d packets, want 3", len(f.Packets))
	}
	if f := readPcap(t, path+".1"); len(f.Packets) != 15 {
		t.Errorf("rotated file: %d packets, want 15", len(f.Packets))
	}
	// The file stays open after its writers: its opener closes it.
	if _, err := p.sink.Write(nil); err != nil || p.sink.file == nil {
		t.Errorf("pcap file closed by a writer with KeepPcap (%v)", err)
	}
}

// TestWriterPcapSetPath checks that the pcap file follows a log switch as
// it follows Reopen: reopened at its own path, a new file if it was
// renamed; and that a switch that fails changes neither file.
func TestWriterPcapSetPath(t *testing.T) {
	dir := t.TempDir()
	p, pp := openPcapTest(t, false)
	w := openTest(t, &WriterConfig{Path: filepath.Join(dir, "a.log"), Workers: 1, Delay: -1, Pcap: p})
	if err := w.Start(&Header{}); err != nil {
		t.Fatal(err)
	}
	r := goldenRecords()[0].rec
	submit := func(first int64, n int) {
		for i := range n {
			r.Pkt.Time = first + int64(i)
			w.Submit(0, []correlate.Record{r}, r.Pkt.Time)
		}
		waitFor(t, "records written", func() bool { st := w.Stats(); return st.Records == uint64(first-1+int64(n)) })
	}
	submit(1, 4)
	if err := w.SetPath(filepath.Join(dir, "missing", "b.log")); err == nil {
		t.Fatal("SetPath to a missing directory succeeded")
	}
	if err := os.Rename(pp, pp+".1"); err != nil {
		t.Fatal(err)
	}
	if err := w.SetPath(filepath.Join(dir, "b.log")); err != nil {
		t.Fatal(err)
	}
	submit(5, 6)
	if err := w.Close(nil); err != nil {
		t.Fatal(err)
	}
	if f := readPcap(t, pp+".1"); len(f.Packets) != 4 {
		t.Errorf("pcap file before the switch: %d packets, want 4", len(f.Packets))
	}
	if f := readPcap(t, pp); len(f.Packets) != 6 {
		t.Errorf("pcap file after the switch: %d packets, want 6", len(f.Packets))
	}
}

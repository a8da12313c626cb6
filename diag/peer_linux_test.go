//go:build linux

package diag

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// fakePeer stands in for the kernel behind a Client: the Client's socket
// is one end of an AF_UNIX datagram socketpair, and its sends go to answer
// instead of the kernel. answer sees each batch's requests and writes reply
// datagrams (recorded kernel replies from testdata/, with the sequence
// numbers rewritten) to the other end before returning, as the kernel
// queues its replies before sendmsg returns. The Client reads them with its
// real recvmmsg. Nothing here needs privilege.
type fakePeer struct {
	t      *testing.T
	c      *Client
	peer   int
	rounds [][]request // the requests of every batch sent
	seqs   [][]uint32
	answer func(round int, seqs []uint32) [][]byte
}

func newFakePeer(t *testing.T, batch int) *fakePeer {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20); err != nil {
			t.Fatal(err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	c, err := newClient(fds[0], batch)
	if err != nil {
		t.Fatal(err)
	}
	p := &fakePeer{t: t, c: c, peer: fds[1]}
	c.send = p.send
	t.Cleanup(func() {
		c.Close()
		unix.Close(fds[1])
	})
	return p
}

// send decodes a batch as the kernel would, and queues the answer's datagrams.
func (p *fakePeer) send(b []byte) error {
	var reqs []request
	var seqs []uint32
	for len(b) >= requestLen {
		seqs = append(seqs, native.Uint32(b[8:12]))
		reqs = append(reqs, decodeRequest(b[sizeofNlmsghdr:requestLen]))
		b = b[requestLen:]
	}
	if len(b) != 0 {
		p.t.Errorf("batch with %d stray bytes", len(b))
	}
	round := len(p.rounds)
	p.rounds = append(p.rounds, reqs)
	p.seqs = append(p.seqs, seqs)
	for _, d := range p.answer(round, seqs) {
		if err := unix.Send(p.peer, d, 0); err != nil {
			p.t.Fatalf("peer send: %v", err)
		}
	}
	return nil
}

// decodeRequest reads back the fields of an inet_diag_req_v2 the tests check.
func decodeRequest(b []byte) request {
	var r request
	r.family = b[offReqFamily]
	id := b[offReqID:]
	r.lport = uint16(id[offSockIDSport])<<8 | uint16(id[offSockIDSport+1])
	r.rport = uint16(id[offSockIDDport])<<8 | uint16(id[offSockIDDport+1])
	r.ifindex = native.Uint32(id[offSockIDIf:])
	return r
}

// reply returns the recorded reply in file with sequence number seq.
func reply(t *testing.T, file string, seq uint32) []byte {
	t.Helper()
	b := append([]byte(nil), readTestdata(t, file)...)
	native.PutUint32(b[8:12], seq)
	return b
}

// errReply is the recorded ENOENT error reply with another errno.
func errReply(t *testing.T, errno syscall.Errno, seq uint32) []byte {
	t.Helper()
	b := reply(t, "reply-enoent.bin", seq)
	native.PutUint32(b[sizeofNlmsghdr:], uint32(-int32(errno)))
	return b
}

func cat(ds ...[]byte) []byte {
	var b []byte
	for _, d := range ds {
		b = append(b, d...)
	}
	return b
}

func queries(n int) []tcp.Query {
	qs := make([]tcp.Query, n)
	for i := range qs {
		qs[i] = tcp.Query{
			Local:  netip.AddrPortFrom(netip.MustParseAddr("10.77.0.1"), uint16(40000+i)),
			Remote: netip.MustParseAddrPort("10.77.0.2:5201"),
		}
	}
	return qs
}

// established is the cookie of the socket in reply-established-v4.bin.
func establishedCookie(t *testing.T) uint64 {
	t.Helper()
	var s tcp.Snapshot
	typ, _, payload, _, _ := nextMessage(readTestdata(t, "reply-established-v4.bin"))
	parseReply(typ, payload, &s)
	return s.Cookie
}

func TestReplayReplies(t *testing.T) {
	type outcome struct {
		status tcp.Status
		cookie bool // the recorded socket's cookie
	}
	found, none, notEst := outcome{tcp.Found, true}, outcome{tcp.NoSocket, false}, outcome{tcp.NotEstablished, false}
	tests := []struct {
		name    string
		n       int
		answer  func(t *testing.T, round int, seqs []uint32) [][]byte
		want    []outcome
		stats   Stats // Lookups, Batches, outcomes, errors, overruns, resent
		wantErr error
	}{{
		name: "one datagram per reply, in order",
		n:    3,
		answer: func(t *testing.T, _ int, seqs []uint32) [][]byte {
			return [][]byte{reply(t, "reply-established-v4.bin", seqs[0]), reply(t, "reply-timewait.bin", seqs[1]), reply(t, "reply-enoent.bin", seqs[2])}
		},
		want:  []outcome{found, notEst, none},
		stats: Stats{Lookups: 3, Batches: 1, Found: 1, NotEstablished: 1, NoSocket: 1},
	}, {
		name: "several replies per datagram, out of order, matched by sequence number",
		n:    4,
		answer: func(t *testing.T, _ int, s []uint32) [][]byte {
			return [][]byte{
				cat(reply(t, "reply-listener.bin", s[3]), reply(t, "reply-established-v4.bin", s[1])),
				cat(reply(t, "reply-closewait.bin", s[2]), reply(t, "reply-enoent.bin", s[0])),
			}
		},
		want:  []outcome{none, found, {tcp.Found, false}, none},
		stats: Stats{Lookups: 4, Batches: 1, Found: 2, NoSocket: 2, ListenerReplies: 1},
	}, {
		name: "stale replies of an earlier batch and duplicates are dropped",
		n:    2,
		answer: func(t *testing.T, _ int, s []uint32) [][]byte {
			return [][]byte{
				reply(t, "reply-enoent.bin", s[0]-1),        // before the batch
				reply(t, "reply-enoent.bin", s[len(s)-1]+1), // after it
				reply(t, "reply-established-v4.bin", s[0]),
				reply(t, "reply-enoent.bin", s[0]),                                    // slot 0 again
				cat(reply(t, "reply-established-v4.bin", s[1]), errReply(t, 0, s[1])), // an ACK: not asked for
			}
		},
		want:  []outcome{found, found},
		stats: Stats{Lookups: 2, Batches: 1, Found: 2},
	}, {
		name: "EAGAIN and ENOBUFS replies are asked again",
		n:    3,
		answer: func(t *testing.T, round int, s []uint32) [][]byte {
			if round == 0 {
				return [][]byte{errReply(t, unix.EAGAIN, s[0]), reply(t, "reply-established-v4.bin", s[1]), errReply(t, unix.ENOBUFS, s[2])}
			}
			if len(s) != 2 {
				t.Errorf("round %d asks %d queries again, want 2", round, len(s))
			}
			return [][]byte{reply(t, "reply-established-v4.bin", s[0]), reply(t, "reply-timewait.bin", s[1])}
		},
		want:  []outcome{found, found, notEst},
		stats: Stats{Lookups: 3, Batches: 2, Found: 2, NotEstablished: 1, Overruns: 2, Resent: 2},
	}, {
		name: "lost replies are asked again",
		n:    3,
		answer: func(t *testing.T, round int, s []uint32) [][]byte {
			if round == 0 {
				return [][]byte{reply(t, "reply-established-v4.bin", s[1])}
			}
			return [][]byte{reply(t, "reply-enoent.bin", s[0]), reply(t, "reply-established-v4.bin", s[1])}
		},
		want:  []outcome{none, found, found},
		stats: Stats{Lookups: 3, Batches: 2, Found: 2, NoSocket: 1, Resent: 2},
	}, {
		name: "replies lost after a retry fail the lookup",
		n:    3,
		answer: func(t *testing.T, round int, s []uint32) [][]byte {
			if round == 0 {
				return [][]byte{reply(t, "reply-established-v4.bin", s[0])}
			}
			return nil // the two asked again are lost again
		},
		want:    []outcome{found},
		stats:   Stats{Lookups: 3, Batches: 2, Found: 1, Resent: 2},
		wantErr: unix.ENOBUFS,
	}, {
		name: "other errors and malformed replies count as errors",
		n:    2,
		answer: func(t *testing.T, _ int, s []uint32) [][]byte {
			bad := reply(t, "reply-established-v4.bin", s[1])
			native.PutUint32(bad[0:4], sizeofNlmsghdr+10) // an inet_diag_msg cut short
			return [][]byte{errReply(t, unix.EINVAL, s[0]), bad[:sizeofNlmsghdr+10]}
		},
		want:  []outcome{none, none},
		stats: Stats{Lookups: 2, Batches: 1, NoSocket: 2, Errors: 2},
	}}
	cookie := establishedCookie(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newFakePeer(t, 64)
			p.answer = func(round int, seqs []uint32) [][]byte { return tt.answer(t, round, seqs) }
			qs := queries(tt.n)
			out := make([]tcp.Snapshot, len(qs))
			err := p.c.Lookup(qs, out)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Lookup: %v, want %v", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			for i, w := range tt.want {
				if out[i].Status != w.status || (out[i].Cookie == cookie) != w.cookie {
					t.Errorf("query %d: %v cookie %d, want %v (recorded cookie %v)", i, out[i].Status, out[i].Cookie, w.status, w.cookie)
				}
				if out[i].Time == 0 {
					t.Errorf("query %d: no time", i)
				}
			}
			if got := p.c.Stats(); got != tt.stats {
				t.Errorf("stats\n got %+v\nwant %+v", got, tt.stats)
			}
			// Every request names its query.
			for _, r := range p.rounds[0] {
				if r.family != afInet || r.rport != 5201 || r.lport < 40000 {
					t.Errorf("request %+v", r)
				}
			}
		})
	}
}

// TestReplaySequenceAcrossLookups checks that sequence numbers keep growing
// across lookups, so a late reply to one lookup is never taken for the
// next one's.
func TestReplaySequenceAcrossLookups(t *testing.T) {
	p := newFakePeer(t, 64)
	var late []byte
	p.answer = func(round int, s []uint32) [][]byte {
		if round == 0 {
			// The reply to query 1 is held back and arrives in the next
			// lookup, where the same slot is asked again.
			late = reply(t, "reply-timewait.bin", s[1])
			return [][]byte{reply(t, "reply-established-v4.bin", s[0]), reply(t, "reply-established-v4.bin", s[1])}
		}
		return [][]byte{late, reply(t, "reply-established-v4.bin", s[0]), reply(t, "reply-established-v4.bin", s[1])}
	}
	out := make([]tcp.Snapshot, 2)
	for range 2 {
		if err := p.c.Lookup(queries(2), out); err != nil {
			t.Fatal(err)
		}
		if out[0].Status != tcp.Found || out[1].Status != tcp.Found {
			t.Fatalf("statuses %v %v: the late reply was taken", out[0].Status, out[1].Status)
		}
	}
	if p.seqs[1][0] != p.seqs[0][1]+1 {
		t.Errorf("sequence numbers %v then %v, want them to go on", p.seqs[0], p.seqs[1])
	}
}

// TestReplayBatches checks that a lookup larger than the batch size goes
// out in batches of at most that size, each answered on its own.
func TestReplayBatches(t *testing.T) {
	p := newFakePeer(t, 4)
	p.answer = func(_ int, s []uint32) [][]byte {
		var ds [][]byte
		for _, q := range s {
			ds = append(ds, reply(t, "reply-established-v4.bin", q))
		}
		return ds
	}
	out := make([]tcp.Snapshot, 10)
	if err := p.c.Lookup(queries(10), out); err != nil {
		t.Fatal(err)
	}
	var sizes []int
	for _, r := range p.rounds {
		sizes = append(sizes, len(r))
	}
	if len(sizes) != 3 || sizes[0] != 4 || sizes[1] != 4 || sizes[2] != 2 {
		t.Errorf("batch sizes %v, want [4 4 2]", sizes)
	}
	for i := range out {
		if out[i].Status != tcp.Found {
			t.Errorf("query %d: %v", i, out[i].Status)
		}
	}
}

// TestCloseDuringLookup closes the Client while a send is in progress: the
// Lookup fails with net.ErrClosed, and the descriptor number stays taken
// until the send is over, so nothing else can be opened on it meanwhile.
func TestCloseDuringLookup(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1])
	c, err := newClient(fds[0], 64)
	if err != nil {
		t.Fatal(err)
	}
	inSend, release := make(chan struct{}), make(chan struct{})
	c.send = func(b []byte) error {
		// A send the kernel holds (on a socket lock): the real one is
		// c.sendKernel, whose write is under way as the RawConn's callback.
		return c.conn.Write(func(fd uintptr) bool {
			close(inSend)
			<-release
			return true
		})
	}
	done := make(chan error, 1)
	go func() { done <- c.Lookup(queries(2), make([]tcp.Snapshot, 2)) }()
	<-inSend
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// The number is still the Client's: a new descriptor gets another.
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if int(f.Fd()) == fds[0] {
		t.Errorf("a file opened during the send got the Client's descriptor %d", fds[0])
	}
	close(release)
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Lookup: %v, want net.ErrClosed", err)
	}
	if err := c.Lookup(queries(1), make([]tcp.Snapshot, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Lookup after Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestZoneNames checks that a named zone is resolved in the socket's
// namespace, that a name not found is asked again (an interface made later
// is found), and that found names are remembered.
func TestZoneNames(t *testing.T) {
	p := newFakePeer(t, 64)
	p.answer = func(_ int, s []uint32) [][]byte { return [][]byte{reply(t, "reply-enoent.bin", s[0])} }
	q := func(zone string) tcp.Query {
		return tcp.Query{
			Local:  netip.AddrPortFrom(netip.MustParseAddr("fe80::1").WithZone(zone), 40000),
			Remote: netip.AddrPortFrom(netip.MustParseAddr("fe80::2"), 5201),
		}
	}
	out := make([]tcp.Snapshot, 1)
	for _, zone := range []string{"nosuchif0", "nosuchif0", "lo", "lo"} {
		if err := p.c.Lookup([]tcp.Query{q(zone)}, out); err != nil {
			t.Fatal(err)
		}
	}
	var got []uint32
	for _, r := range p.rounds {
		got = append(got, r[0].ifindex)
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint32{0, 0, uint32(lo.Index), uint32(lo.Index)}; len(got) != 4 || got[0] != want[0] || got[2] != want[2] || got[3] != want[3] {
		t.Errorf("ifindexes sent %v, want %v", got, want)
	}
	if _, ok := p.c.zones["nosuchif0"]; ok {
		t.Error("a name not found was remembered")
	}
	if e, ok := p.c.zones["lo"]; !ok || e.index != uint32(lo.Index) {
		t.Errorf("lo remembered as %+v, %v", e, ok)
	}
}

package diag

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// FuzzParseReply feeds arbitrary datagrams to the reply parser: it must
// never panic nor read out of range, and what it reports must stay within
// what it was given.
func FuzzParseReply(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.bin"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		if strings.HasPrefix(filepath.Base(name), "reply-") {
			f.Add(b)
			f.Add(b[:len(b)/2])
		}
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, d []byte) {
		total := len(d)
		for i := 0; ; i++ {
			typ, _, payload, rest, ok := nextMessage(d)
			if !ok {
				break
			}
			if len(rest) >= len(d) {
				t.Fatalf("no progress: rest %d of %d", len(rest), len(d))
			}
			s := tcp.Snapshot{Time: 1}
			kind, _ := parseReply(typ, payload, &s)
			if int(s.InfoLen) > len(payload) {
				t.Fatalf("InfoLen %d > payload %d", s.InfoLen, len(payload))
			}
			if s.Time != 1 {
				t.Fatal("Time not kept")
			}
			if kind != replySocket && s.Status != tcp.NoSocket {
				t.Fatalf("status %v from a non-socket reply", s.Status)
			}
			if i > total {
				t.Fatal("more messages than bytes")
			}
			d = rest
		}
		var info tcp.Info
		if n := ParseTCPInfo(d, &info); n > len(d) {
			t.Fatalf("ParseTCPInfo used %d of %d bytes", n, len(d))
		}
	})
}

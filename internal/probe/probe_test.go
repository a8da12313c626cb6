package probe

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/siftr-probe/siftr-probe/diag"
	"github.com/siftr-probe/siftr-probe/output"
)

// TestAddDiag sets every field of diag.Stats to a distinct value and checks
// that addDiag sums each one, so that a counter added to diag.Stats later
// cannot be silently left at 0 in the summary, the stats file and the
// metrics.
func TestAddDiag(t *testing.T) {
	var a, b diag.Stats
	va, vb := reflect.ValueOf(&a).Elem(), reflect.ValueOf(&b).Elem()
	for i := range va.NumField() {
		if k := va.Field(i).Kind(); k != reflect.Uint64 {
			t.Fatalf("diag.Stats.%s is a %s: teach addDiag and this test about it", va.Type().Field(i).Name, k)
		}
		va.Field(i).SetUint(uint64(1000 * (i + 1)))
		vb.Field(i).SetUint(uint64(i + 1))
	}
	sum := addDiag(a, b)
	vs := reflect.ValueOf(sum)
	for i := range vs.NumField() {
		if got, want := vs.Field(i).Uint(), uint64(1001*(i+1)); got != want {
			t.Errorf("addDiag: %s = %d, want %d", vs.Type().Field(i).Name, got, want)
		}
	}
}

// TestExplainLog checks the one-line messages for a log file that cannot be
// opened: the writer's explanation survives, and the path is named once.
func TestExplainLog(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "link.log")
	if err := os.Symlink(filepath.Join(dir, "target.log"), link); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"symlink", link, "cannot write log file " + link + ": it is a symbolic link; refusing to follow it"},
		{"directory", dir, "cannot write log file " + dir + ": it is a directory"},
		{"missing directory", filepath.Join(dir, "no", "siftr.log"), "cannot write log file " + filepath.Join(dir, "no", "siftr.log") + ": its directory does not exist"},
		{"under a file", filepath.Join(file, "siftr.log"), "cannot write log file " + filepath.Join(file, "siftr.log") + ": not a directory"},
	} {
		_, err := output.OpenWriter(&output.WriterConfig{Path: tc.path, Workers: 1})
		if err == nil {
			t.Errorf("%s: OpenWriter succeeded", tc.name)
			continue
		}
		e := explainLog(tc.path, err)
		var se *SetupError
		if !errors.As(e, &se) {
			t.Errorf("%s: %T, want a *SetupError", tc.name, e)
		}
		msg := e.Error()
		if msg != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, msg, tc.want)
		}
		if strings.Count(msg, tc.path) != 1 || strings.Contains(msg, "\n") || strings.Contains(msg, "output:") {
			t.Errorf("%s: %q, want one line naming %s once", tc.name, msg, tc.path)
		}
		if !errors.Is(e, err) {
			t.Errorf("%s: the explanation does not wrap the original error", tc.name)
		}
	}
	// The header cannot be written.
	w, err := output.OpenWriter(&output.WriterConfig{Path: "/dev/full", Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	err = w.Start(&output.Header{})
	w.Close(nil)
	if err == nil {
		t.Fatal("writing to /dev/full succeeded")
	}
	if got, want := explainLog("/dev/full", err).Error(), "cannot write log file /dev/full: no space left on device"; got != want {
		t.Errorf("full disk: %q, want %q", got, want)
	}
	denied := &os.PathError{Op: "open", Path: "/x.log", Err: syscall.EACCES}
	if got, want := explainLog("/x.log", fmt.Errorf("output: cannot open log file /x.log: permission denied: %w", denied)).Error(), "cannot write log file /x.log: permission denied"; got != want {
		t.Errorf("permission: %q, want %q", got, want)
	}
	generic := &os.PathError{Op: "open", Path: "/x.log", Err: syscall.EROFS}
	if got, want := explainLog("/x.log", fmt.Errorf("output: open log file: %w", generic)).Error(), "cannot write log file /x.log: read-only file system"; got != want {
		t.Errorf("no explanation: %q, want %q", got, want)
	}
}

// TestSetLogFilePcap: the log cannot be switched to the run's pcap file,
// under any of its names (the probe holds it locked itself).
func TestSetLogFilePcap(t *testing.T) {
	dir := t.TempDir()
	pcap := filepath.Join(dir, "p.pcapng")
	pc, err := output.OpenPcap(&output.PcapConfig{Path: pcap, Iface: "lo"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := os.Symlink(pcap, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	p := &Pipeline{cfg: Config{Pcap: pcap, LogFile: filepath.Join(dir, "x.log"), Stderr: io.Discard}, pcap: pc}
	for _, path := range []string{pcap, filepath.Join(dir, ".", "p.pcapng"), filepath.Join(dir, "link")} {
		_, err := p.SetLogFile(path)
		var se *SetupError
		if !errors.As(err, &se) || !strings.Contains(err.Error(), "is the pcap file (--pcap)") {
			t.Errorf("SetLogFile(%s): %v, want a set-up error naming the pcap file", path, err)
		}
	}
}

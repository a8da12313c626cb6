package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/siftr-probe/siftr-probe/internal/syncbuf"
)

func TestParseFlags(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	o, _, err := parse([]string{"--iface", "eth0", "--port", "5201", "--ppl", "10", "--block-timeout", "2ms", "--ring-size", "16M"}, getenv)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.Iface != "eth0" || o.cfg.Port != 5201 || o.cfg.PPL != 10 || o.cfg.BlockTimeout != 2*time.Millisecond || o.cfg.RingSize != 16<<20 {
		t.Errorf("parsed %+v", o.cfg)
	}
	if o.cfg.LogFile != "/var/log/siftr.log" || o.cfg.Format != "siftr" || o.cfg.StatusEvery != 5*time.Second {
		t.Errorf("defaults: %+v", o.cfg)
	}
	// Numbers are decimal: a leading zero is not octal.
	o, _, err = parse([]string{"--iface", "eth0", "--port", "0443", "--ppl", "010", "--workers", "02", "--status-interval", "100ms"}, getenv)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.Port != 443 || o.cfg.PPL != 10 || o.cfg.Workers != 2 || o.cfg.StatusEvery != 100*time.Millisecond {
		t.Errorf("--port 0443 --ppl 010 --workers 02: parsed port %d, ppl %d, workers %d", o.cfg.Port, o.cfg.PPL, o.cfg.Workers)
	}
}

// TestParseControl: --control's default is made if it can be (optional),
// a path asked for, also from the environment, must be; a relative path
// is made absolute.
func TestParseControl(t *testing.T) {
	defaultControl = "/run/siftr-probe/ctl"
	defer func() { defaultControl = "" }()
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	for _, tc := range []struct {
		args     []string
		env      string
		path     string
		optional bool
	}{
		{[]string{"--iface", "lo"}, "", "/run/siftr-probe/ctl", true},
		{[]string{"--iface", "lo", "--control", "/tmp/x/ctl"}, "", "/tmp/x/ctl", false},
		{[]string{"--iface", "lo"}, "/tmp/y/ctl", "/tmp/y/ctl", false},
		{[]string{"--iface", "lo", "--control", ""}, "", "", false},
		{[]string{"--iface", "lo", "--control", "rel/ctl", "--start-disabled"}, "", "", false},
	} {
		env["SIFTR_PROBE_CONTROL"] = tc.env
		o, _, err := parse(tc.args, getenv)
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if tc.path == "" && o.cfg.Control != "" && !filepath.IsAbs(o.cfg.Control) {
			t.Errorf("%q: control %q, want an absolute path", tc.args, o.cfg.Control)
		}
		if tc.path != "" && o.cfg.Control != tc.path || o.cfg.ControlOptional != tc.optional {
			t.Errorf("%q (env %q): control %q optional %v, want %q %v", tc.args, tc.env, o.cfg.Control, o.cfg.ControlOptional, tc.path, tc.optional)
		}
	}
}

func TestParseEnvironment(t *testing.T) {
	env := map[string]string{"SIFTR_PROBE_IFACE": "lo", "SIFTR_PROBE_PORT": "80", "SIFTR_PROBE_BLOCK_TIMEOUT": "3ms", "SIFTR_PROBE_QUIET": "true"}
	getenv := func(k string) string { return env[k] }
	o, _, err := parse([]string{"--port", "443"}, getenv)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.Iface != "lo" || o.cfg.Port != 443 || o.cfg.BlockTimeout != 3*time.Millisecond || !o.quiet || o.cfg.StatusEvery != 0 {
		t.Errorf("flags must win over the environment, the environment over defaults: %+v quiet=%v", o.cfg, o.quiet)
	}
	env["SIFTR_PROBE_PPL"] = "x"
	if _, _, err := parse(nil, getenv); err == nil || err.Error() != `bad SIFTR_PROBE_PPL="x": not a whole number` {
		t.Errorf("bad environment value: err = %v, want one naming SIFTR_PROBE_PPL", err)
	}
}

// TestUsageErrors checks the one-line errors and exit status 2 of bad
// arguments: the error, then a pointer to --help, and nothing else.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{}, "--iface is required (for example --iface eth0; list interfaces with: ip link)"},
		{[]string{"--iface", "lo", "--port", "70000"}, "bad --port 70000: must be 0 (all) to 65535"},
		{[]string{"--iface", "lo", "--port", "-1"}, "bad --port -1: must be 0 (all) to 65535"},
		{[]string{"--iface", "lo", "--port", "abc"}, `bad --port "abc": not a whole number`},
		{[]string{"--iface", "lo", "--port", "99999999999999999999"}, `bad --port "99999999999999999999": out of range`},
		{[]string{"--iface", "lo", "--ppl", "0"}, "bad --ppl 0: must be 1 (every packet) or more"},
		{[]string{"--iface", "lo", "--ppl", "-1"}, "bad --ppl -1: must be 1 (every packet) or more"},
		{[]string{"--iface", "lo", "--ppl", "4294967296"}, "bad --ppl 4294967296: must be at most 2147483648"},
		{[]string{"--iface", "lo", "--block-timeout", "500us"}, "bad --block-timeout 500µs: must be a whole number of milliseconds, at least 1ms"},
		{[]string{"--iface", "lo", "--duration", "5"}, `bad --duration "5": not a duration (e.g. 500ms, 30s, 5m)`},
		{[]string{"--iface", "lo", "--duration", "-1s"}, "bad --duration -1s: must be 0 (until stopped) or more"},
		{[]string{"--iface", "lo", "--status-interval", "-1s"}, "bad --status-interval -1s: must be 0 (none) or at least 100ms"},
		{[]string{"--iface", "lo", "--status-interval", "1ns"}, "bad --status-interval 1ns: must be 0 (none) or at least 100ms"},
		{[]string{"--iface", "lo", "--port", "0x1451"}, `bad --port "0x1451": not a whole number`},
		{[]string{"--iface", "lo", "--ppl", "0x10"}, `bad --ppl "0x10": not a whole number`},
		{[]string{"--iface", "lo", "--workers", "1000"}, "bad --workers 1000: at most 256 (a fanout group's limit)"},
		{[]string{"--iface", "lo", "--ring-size", "99999999999G"}, `bad --ring-size "99999999999G": out of range`},
		{[]string{"--iface", "lo", "--ring-size", "9223372036854775807k"}, `bad --ring-size "9223372036854775807k": out of range`},
		{[]string{"--iface", "lo", "--block-size", "99999999999999999999"}, `bad --block-size "99999999999999999999": out of range`},
		{[]string{"--iface", "lo", "--ring-size", "32G"}, "bad --ring-size 34359738368: at most 17179869184 (16G)"},
		{[]string{"--iface", "lo", "--block-size", "2G"}, "bad --block-size 2147483648: at most 1073741824 (1G)"},
		{[]string{"--iface", "lo", "--logfile="}, "--logfile needs a path (- for standard output)"},
		{[]string{"--iface", "lo", "--stats-file="}, "--stats-file needs a path"},
		{[]string{"--iface", "lo", "--cpuprofile", ""}, "--cpuprofile needs a path"},
		{[]string{"--iface", "lo", "--pcap="}, "--pcap needs a path"},
		{[]string{"--iface", "lo", "--pcap", "-"}, "--pcap needs a file path: standard output is not supported"},
		{[]string{"--iface", "lo", "--pcap-all"}, "--pcap-all needs --pcap FILE"},
		{[]string{"--iface", "lo", "--logfile", "/tmp/x.log", "--pcap", "/tmp/../tmp/x.log"}, "--pcap /tmp/../tmp/x.log is the log file: give it a path of its own"},
		{[]string{"--iface", "lo", "--state", "exact", "--ppl", "10", "--pcap", "p.pcapng", "--pcap-all"}, "--pcap-all with --state exact needs --ppl 1 (not 10): exact mode samples in the kernel, so the packets not logged never reach the probe"},
		{[]string{"--iface", "lo", "--workers", "-1"}, "bad --workers -1: must be 0 (all online CPUs) or more"},
		{[]string{"--iface", "lo", "--format", "xml"}, `bad --format "xml": must be siftr or jsonl`},
		{[]string{"--iface", "lo", "--ring-size", "lots"}, `bad --ring-size "lots": not a size (e.g. 131072, 128k, 8M)`},
		{[]string{"--iface", "lo", "--quiet=maybe"}, `bad --quiet "maybe": not true or false`},
		{[]string{"--iface", "lo", "stray"}, `unexpected argument "stray" (flags start with --)`},
		{[]string{"--iface", "lo", "--netns-include", "netns=x"}, "--netns-include needs --all-netns"},
		{[]string{"--iface", "lo", "--node-name", "n1"}, "--node-name needs --all-netns"},
		{[]string{"--all-netns", "--netns", "/run/netns/x"}, "--all-netns and --netns exclude each other"},
		{[]string{"--all-netns", "--max-netns", "0"}, "bad --max-netns 0: must be 1 to 65536"},
		{[]string{"--all-netns", "--control", "/tmp/siftr-test.sock"}, "--control does not go with --all-netns yet (a fleet run has no logging cycles to change)"},
		{[]string{"--all-netns", "--start-disabled", "--control", "/tmp/siftr-test.sock"}, "--start-disabled does not go with --all-netns yet (a fleet run has no logging cycles to enable)"},
		{[]string{"--bogus"}, "unknown flag --bogus"},
		{[]string{"--iface"}, "--iface needs a value"},
		{[]string{"--iface", "lo", "--start-disabled", "--control", ""}, "--start-disabled needs a control socket to be enabled through (--control PATH)"},
		{[]string{"--iface", "lo", "--start-disabled=maybe"}, `bad --start-disabled "maybe": not true or false`},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tc.args, &stdout, &stderr)
		if code != exitUsage {
			t.Errorf("%q: exit %d, want %d", tc.args, code, exitUsage)
		}
		if want := "siftr-probe: " + tc.want + "\nrun 'siftr-probe --help' for usage\n"; stderr.String() != want {
			t.Errorf("%q: stderr\n%s\nwant\n%s", tc.args, stderr.String(), want)
		}
		if stdout.Len() != 0 {
			t.Errorf("%q: stdout %q", tc.args, stdout.String())
		}
	}
}

func TestDemoUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"demo", "--duration", "x"}, `bad --duration "x": not a duration (e.g. 500ms, 30s, 5m)`},
		{[]string{"demo", "--port", "1"}, "unknown flag --port"},
		{[]string{"demo", "now"}, `unexpected argument "now"`},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), tc.args, &stdout, &stderr); code != exitUsage {
			t.Errorf("%q: exit %d, want %d", tc.args, code, exitUsage)
		}
		if want := "siftr-probe demo: " + tc.want + "\nrun 'siftr-probe demo --help' for usage\n"; stderr.String() != want {
			t.Errorf("%q: stderr\n%s\nwant\n%s", tc.args, stderr.String(), want)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, &stdout, &stderr); code != exitOK {
		t.Errorf("--help exit %d", code)
	}
	help := stdout.String()
	for _, want := range []string{"Examples:", "SIFTR_PROBE_", "CAP_NET_RAW", "demo", "second Ctrl-C",
		"\n  --iface IFACE\n", "\n  --port PORT\n", "\n  --ppl N\n", "\n  --logfile PATH\n",
		"\n  --format FORMAT\n", "\n  --workers N\n", "\n  --block-timeout D\n", "\n  --block-size SIZE\n",
		"\n  --ring-size SIZE\n", "\n  --duration D\n", "\n  --netns PATH\n", "\n  --status-interval D\n",
		"\n  --metrics-addr ADDR\n", "\n  --stats-file PATH\n", "\n  --cpuprofile PATH\n", "\n  --quiet\n",
		"\n  --version\n", "\n  --help\n", "(default /var/log/siftr.log)", "(default 5s)"} {
		if !strings.Contains(help, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	// Every flag is listed, once.
	newFlagSet(&options{}).VisitAll(func(f *flag.Flag) {
		if n := strings.Count(help, "\n  --"+f.Name+" ") + strings.Count(help, "\n  --"+f.Name+"\n"); n != 1 {
			t.Errorf("--help lists --%s %d times", f.Name, n)
		}
	})
	for i, ln := range strings.Split(help, "\n") {
		if len([]rune(ln)) > 80 {
			t.Errorf("--help line %d is %d columns: %q", i+1, len([]rune(ln)), ln)
		}
	}
	if stderr.Len() != 0 {
		t.Errorf("--help wrote to stderr: %q", stderr.String())
	}
	stdout.Reset()
	if code := run(context.Background(), []string{"demo", "--help"}, &stdout, &stderr); code != exitOK {
		t.Errorf("demo --help exit %d", code)
	}
	if !strings.Contains(stdout.String(), "\n  --duration D\n") || !strings.Contains(stdout.String(), "\n  --logfile PATH\n") {
		t.Errorf("demo --help:\n%s", stdout.String())
	}
	stdout.Reset()
	if code := run(context.Background(), []string{"--version"}, &stdout, &stderr); code != exitOK || !strings.HasPrefix(stdout.String(), "siftr-probe ") {
		t.Errorf("--version: exit %d, %q", code, stdout.String())
	}
}

// TestStopOnSignals checks that the first signal starts the graceful stop
// and a second one exits at once, saying so.
func TestStopOnSignals(t *testing.T) {
	sigs := make(chan os.Signal, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncbuf.Buffer
	exited := make(chan int, 1)
	go stopOnSignals(sigs, cancel, &stderr, func(code int) { exited <- code })
	sigs <- syscall.SIGTERM
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the first signal did not stop the run")
	}
	select {
	case code := <-exited:
		t.Fatalf("exit %d after the first signal", code)
	case <-time.After(50 * time.Millisecond):
	}
	sigs <- os.Interrupt
	select {
	case code := <-exited:
		if code != exitForced {
			t.Errorf("exit %d, want %d", code, exitForced)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a second signal was swallowed")
	}
	if got := stderr.String(); !strings.HasPrefix(got, "siftr-probe: second SIGINT: ") || !strings.Contains(got, "records may be lost") || strings.Count(got, "\n") != 1 {
		t.Errorf("stderr %q, want one line saying records may be lost", got)
	}
}

// TestOutputFilesCheckedAtStart checks that --stats-file and --cpuprofile
// follow the log file's rules, and are checked before anything runs: a
// symbolic link is refused, not followed (its target is never created), a
// FIFO is refused without blocking.
func TestOutputFilesCheckedAtStart(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "link")
	if err := os.Symlink(filepath.Join(dir, "target"), link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--stats-file", link}, "stats file " + link + " is a symbolic link; refusing to follow it"},
		{[]string{"--cpuprofile", link}, "CPU profile " + link + " is a symbolic link; refusing to follow it"},
		{[]string{"--stats-file", fifo}, "stats file " + fifo + " is a named pipe (FIFO), not a regular file"},
		{[]string{"--cpuprofile", dir}, "CPU profile " + dir + " is a directory"},
		{[]string{"--stats-file", filepath.Join(dir, "no", "s.json")}, "cannot create stats file " + filepath.Join(dir, "no", "s.json") + ": its directory does not exist"},
	} {
		var stdout, stderr bytes.Buffer
		// No such interface: the run would fail at set-up, after the files
		// were checked.
		args := append([]string{"--iface", "nonexistent-if0", "--logfile", filepath.Join(dir, "log")}, tc.args...)
		if code := run(context.Background(), args, &stdout, &stderr); code != exitUsage {
			t.Errorf("%q: exit %d, want %d", tc.args, code, exitUsage)
		}
		if got, want := stderr.String(), "siftr-probe: "+tc.want+"\n"; got != want {
			t.Errorf("%q: stderr %q, want %q", tc.args, got, want)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "target")); err == nil {
		t.Error("a symlink's target was created")
	}
	// A stats file made at start is removed if the run does not start.
	stats := filepath.Join(dir, "stats.json")
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--iface", "nonexistent-if0", "--logfile", filepath.Join(dir, "log"), "--stats-file", stats}, &stdout, &stderr); code != exitUsage {
		t.Errorf("exit %d, want %d: %s", code, exitUsage, stderr.String())
	}
	if _, err := os.Lstat(stats); err == nil {
		t.Error("the stats file made at start was left behind by a run that did not start")
	}
}

// TestBrokenPipeWatch checks that the first EPIPE from standard output
// calls the stop hook once, and that other errors do not.
func TestBrokenPipeWatch(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	notifySignals() // SIGPIPE ignored: the write returns EPIPE
	calls := 0
	b := &brokenPipeWatch{w: w, onEPIPE: func() { calls++ }}
	for range 3 {
		if _, err := b.Write([]byte("x\n")); !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("write: %v, want EPIPE", err)
		}
	}
	w.Close()
	if calls != 1 {
		t.Errorf("onEPIPE called %d times, want 1", calls)
	}
	b = &brokenPipeWatch{w: w, onEPIPE: func() { calls++ }}
	b.Write([]byte("x")) // closed file: not EPIPE
	if calls != 1 {
		t.Error("onEPIPE called for an error other than EPIPE")
	}
}

// TestSignalsNotified checks that once notifySignals has run (main calls it
// first), SIGHUP reaches the reopen channel instead of killing the process.
func TestSignalsNotified(t *testing.T) {
	hup := notifySignals()
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if s := <-hup; s != syscall.SIGHUP {
		t.Errorf("got %v", s)
	}
	if again := notifySignals(); again != hup {
		t.Error("notifySignals made a second channel")
	}
}

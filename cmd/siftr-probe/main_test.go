package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	o, _, err := parse([]string{"--iface", "eth0", "--port", "5201", "--ppl", "10", "--block-timeout", "2ms", "--ring-size", "16M"}, &bytes.Buffer{}, getenv)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.Iface != "eth0" || o.cfg.Port != 5201 || o.cfg.PPL != 10 || o.cfg.BlockTimeout != 2*time.Millisecond || o.cfg.RingSize != 16<<20 {
		t.Errorf("parsed %+v", o.cfg)
	}
	if o.cfg.LogFile != "/var/log/siftr.log" || o.cfg.Format != "siftr" || o.cfg.StatusEvery != 5*time.Second {
		t.Errorf("defaults: %+v", o.cfg)
	}
}

func TestParseEnvironment(t *testing.T) {
	env := map[string]string{"SIFTR_PROBE_IFACE": "lo", "SIFTR_PROBE_PORT": "80", "SIFTR_PROBE_BLOCK_TIMEOUT": "3ms", "SIFTR_PROBE_QUIET": "true"}
	getenv := func(k string) string { return env[k] }
	o, _, err := parse([]string{"--port", "443"}, &bytes.Buffer{}, getenv)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.Iface != "lo" || o.cfg.Port != 443 || o.cfg.BlockTimeout != 3*time.Millisecond || !o.quiet || o.cfg.StatusEvery != 0 {
		t.Errorf("flags must win over the environment, the environment over defaults: %+v quiet=%v", o.cfg, o.quiet)
	}
	env["SIFTR_PROBE_PPL"] = "x"
	if _, _, err := parse(nil, &bytes.Buffer{}, getenv); err == nil || !strings.Contains(err.Error(), "SIFTR_PROBE_PPL") {
		t.Errorf("bad environment value: err = %v, want one naming SIFTR_PROBE_PPL", err)
	}
}

// TestUsageErrors checks the one-line errors and exit status 2 of bad arguments.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{}, "--iface is required"},
		{[]string{"--iface", "lo", "--port", "70000"}, "bad --port 70000"},
		{[]string{"--iface", "lo", "--port", "-1"}, "bad --port -1"},
		{[]string{"--iface", "lo", "--ppl", "0"}, "bad --ppl 0"},
		{[]string{"--iface", "lo", "--block-timeout", "500us"}, "bad --block-timeout"},
		{[]string{"--iface", "lo", "--format", "xml"}, "bad --format"},
		{[]string{"--iface", "lo", "--ring-size", "lots"}, "not a size"},
		{[]string{"--iface", "lo", "stray"}, "unexpected argument"},
		{[]string{"--bogus"}, "flag provided but not defined"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tc.args, &stdout, &stderr)
		if code != exitUsage {
			t.Errorf("%q: exit %d, want %d", tc.args, code, exitUsage)
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%q: stderr %q, want it to contain %q", tc.args, stderr.String(), tc.want)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, &stdout, &stderr); code != exitOK {
		t.Errorf("--help exit %d", code)
	}
	for _, want := range []string{"--iface", "--ppl", "Examples:", "SIFTR_PROBE_", "CAP_NET_RAW", "demo"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	stdout.Reset()
	if code := run(context.Background(), []string{"--version"}, &stdout, &stderr); code != exitOK || !strings.HasPrefix(stdout.String(), "siftr-probe ") {
		t.Errorf("--version: exit %d, %q", code, stdout.String())
	}
}

package probe

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFleetSetupErrors: the settings --all-netns refuses, each with a
// one-line set-up error.
func TestFleetSetupErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{NetNS: "/run/netns/x"}, "--all-netns and --netns exclude each other"},
		{Config{NetNSInclude: []string{"netns"}}, `bad namespace selector "netns": want netns=GLOB`},
		{Config{NetNSExclude: []string{"owner=me"}}, `unknown key "owner"`},
		{Config{NetNSExclude: []string{"label=app=web"}}, "needs --node-name"},
		{Config{NetNSExclude: []string{"label=app"}, NodeName: "n1"}, "want label=KEY=VALUE"},
		{Config{NetNSInclude: []string{"pod=shop/web"}}, "needs --node-name"},
		{Config{NetNSInclude: []string{"pod=web"}, NodeName: "n1", Kubeconfig: "/nonexistent"}, "want pod=NAMESPACE/NAME"},
		{Config{Kubeconfig: "/etc/kubeconfig"}, "--kubeconfig needs --node-name"},
		{Config{NodeName: "n1", Kubeconfig: "/nonexistent/kubeconfig"}, "pod identity (--node-name n1)"},
		{Config{Pcap: "x.pcapng"}, "--pcap does not go with --all-netns yet"},
		{Config{Control: "/tmp/siftr-test.sock"}, "--control does not go with --all-netns yet"},
		{Config{Control: "/tmp/siftr-test.sock", StartDisabled: true}, "--control does not go with --all-netns yet"},
		{Config{Control: "/tmp/siftr-test.sock", ControlOptional: true, StartDisabled: true}, "--start-disabled does not go with --all-netns yet"},
		{Config{Iface: "eth[", LogFile: "-"}, `bad --iface pattern "eth["`},
		{Config{LogPerNetNS: "/nonexistent/dir"}, "--log-per-netns /nonexistent/dir: not a directory"},
	} {
		cfg := tc.cfg
		cfg.AllNetNS, cfg.Stderr = true, io.Discard
		if cfg.LogFile == "" {
			cfg.LogFile = t.TempDir() + "/x.log"
		}
		p, err := New(cfg)
		if err == nil {
			p.Close()
			t.Errorf("%+v: no error", tc.cfg)
			continue
		}
		if _, ok := err.(*SetupError); !ok || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%+v: error %q (%T), want a one-line set-up error with %q", tc.cfg, err, err, tc.want)
		}
	}
}

// TestFleetNoDefaultControl: the command's default control socket, not
// asked for (ControlOptional), is not made with --all-netns, and does not
// stop the run from being set up.
func TestFleetNoDefaultControl(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "ctl")
	p, err := New(Config{AllNetNS: true, Control: sock, ControlOptional: true, LogFile: filepath.Join(dir, "x.log"), Stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if got := p.ControlPath(); got != "" {
		t.Errorf("control socket %q, want none", got)
	}
	if _, err := os.Lstat(filepath.Dir(sock)); !os.IsNotExist(err) {
		t.Errorf("the control socket's directory was made (%v)", err)
	}
}

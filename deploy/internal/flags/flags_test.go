package flags

import (
	"path/filepath"
	"slices"
	"testing"
)

func TestEnvNameRoundTrip(t *testing.T) {
	for _, f := range append(slices.Clone(Known), Pending...) {
		env := EnvName(f)
		if got := FlagName(env); got != f {
			t.Errorf("FlagName(%q) = %q, want %q", env, got, f)
		}
		if !IsKnown(env) {
			t.Errorf("IsKnown(%q) = false", env)
		}
	}
	for _, env := range []string{"SIFTR_PROBE_", "SIFTR_PROBE_IFAC", "IFACE", "SIFTR_PROBE_METRICS-ADDR"} {
		if IsKnown(env) {
			t.Errorf("IsKnown(%q) = true, want false", env)
		}
	}
}

// TestKnownMatchesBinary checks the list against the flags the binary's
// main package defines, so a renamed or removed flag is noticed here.
func TestKnownMatchesBinary(t *testing.T) {
	dir := filepath.Join("..", "..", "..", "cmd", "siftr-probe")
	got, err := FromSource(dir)
	if err != nil {
		t.Fatalf("read flags from %s: %v", dir, err)
	}
	if len(got) == 0 {
		t.Fatalf("found no flag definitions in %s", dir)
	}
	for _, k := range Known {
		if !slices.Contains(got, k) {
			t.Errorf("flag --%s is in Known but %s does not define it (it defines %v)", k, dir, got)
		}
		if slices.Contains(Pending, k) {
			t.Errorf("flag --%s is in both Known and Pending", k)
		}
	}
	for _, k := range Pending {
		if slices.Contains(got, k) {
			t.Errorf("flag --%s is defined by %s now: move it from Pending to Known", k, dir)
		}
	}
}

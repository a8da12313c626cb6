// Package labtest holds the test helpers for privileged tests: a netlab lab
// built for one test and removed with it, and the root check that skips a
// test without root except under CI=true. It imports testing, so only test
// files may import it; the probe's binary never links it.
package labtest

import (
	"os"
	"testing"

	"github.com/siftr-probe/siftr-probe/internal/netlab"
)

// NewT builds a lab for a test and removes it when the test ends. Without
// root it skips the test, except under CI=true, where it fails: privileged
// tests must run in CI.
func NewT(t testing.TB, cfg netlab.Config) *netlab.Lab {
	t.Helper()
	RequireRoot(t)
	lab, err := netlab.New(cfg)
	if err != nil {
		t.Fatalf("build lab: %v", err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("remove lab: %v", err)
		}
	})
	return lab
}

// RequireRoot skips a test that needs root, or fails it under CI=true.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root, and CI=true: privileged tests must run in CI")
	}
	t.Skip("needs root (network namespaces, AF_PACKET); run as root or with CI=true to require it")
}

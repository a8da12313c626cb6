package netlab

import (
	"os"
	"testing"
)

// NewT builds a lab for a test and removes it when the test ends. Without
// root it skips the test, except under CI=true, where it fails: privileged
// tests must run in CI.
func NewT(t testing.TB, cfg Config) *Lab {
	t.Helper()
	RequireRoot(t)
	lab, err := New(cfg)
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

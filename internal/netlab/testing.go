package netlab

import (
	"os"
)

// TB is the part of testing.TB the helpers below use. It is declared here,
// rather than importing package testing, so that the binary, which links
// netlab for the demo, does not link the testing package.
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Skip(args ...any)
	Cleanup(func())
}

// NewT builds a lab for a test and removes it when the test ends. Without
// root it skips the test, except under CI=true, where it fails: privileged
// tests must run in CI.
func NewT(t TB, cfg Config) *Lab {
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
func RequireRoot(t TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root, and CI=true: privileged tests must run in CI")
	}
	t.Skip("needs root (network namespaces, AF_PACKET); run as root or with CI=true to require it")
}

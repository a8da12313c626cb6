package netlab

import "os"

// TB is the part of testing.TB that NewT uses; netlab does not import
// testing, so that the binaries that build labs (the demo) do not link it.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Cleanup(func())
	Skip(args ...any)
	Fatal(args ...any)
}

// NewT builds a lab for a test and removes it when the test ends; without
// root it skips the test, except under CI=true, where it fails. Use
// labtest.NewT: this one stays only until internal/probe's integration test
// moves there.
func NewT(t TB, cfg Config) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test needs root, and CI=true: privileged tests must run in CI")
		}
		t.Skip("needs root (network namespaces, AF_PACKET); run as root or with CI=true to require it")
	}
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

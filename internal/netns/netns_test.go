package netns_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
	"github.com/siftr-probe/siftr-probe/internal/netns"
)

func nsID(t *testing.T) string {
	t.Helper()
	id, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestIntegrationCreateAndDo checks that Create makes a namespace of its
// own, that Do runs inside it and leaves the caller where it was, and that
// errors name what failed.
func TestIntegrationCreateAndDo(t *testing.T) {
	labtest.RequireRoot(t)
	name := fmt.Sprintf("siftr-nstest-%d", os.Getpid())
	path, err := netns.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.Remove(path); err != nil {
			t.Error(err)
		}
	})
	if _, err := netns.Create(name); err == nil || !strings.Contains(err.Error(), name) {
		t.Errorf("second Create of %s: %v, want an error naming it", name, err)
	}
	here, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var inside string
	if err := netns.Do(path, func() error {
		inside = nsID(t)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if inside == here || inside == "" {
		t.Errorf("Do ran in %q, the caller's namespace is %q", inside, here)
	}
	var again string
	netns.Do(path, func() error { again = nsID(t); return nil })
	if again != inside {
		t.Errorf("second Do ran in %q, first in %q", again, inside)
	}
	if now, _ := os.Readlink("/proc/self/ns/net"); now != here {
		t.Errorf("the process moved from %q to %q", here, now)
	}
	want := fmt.Errorf("from fn")
	if err := netns.Do(path, func() error { return want }); err != want {
		t.Errorf("Do returned %v, want fn's error", err)
	}
	if err := netns.Do("/nonexistent/ns", func() error { t.Error("fn ran"); return nil }); err == nil || !os.IsNotExist(err) && !strings.Contains(err.Error(), "no such file") {
		t.Errorf("Do on a missing path: %v", err)
	}
	fifo := t.TempDir() + "/fifo"
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	// A FIFO used to block the open forever.
	if err := netns.Do(fifo, func() error { t.Error("fn ran"); return nil }); err == nil || !strings.Contains(err.Error(), "enter network namespace") {
		t.Errorf("Do on a FIFO: %v", err)
	}
	if err := netns.Do("/proc/self/status", func() error { t.Error("fn ran"); return nil }); err == nil || !strings.Contains(err.Error(), "enter network namespace") {
		t.Errorf("Do on a file that is not a namespace: %v", err)
	}
}

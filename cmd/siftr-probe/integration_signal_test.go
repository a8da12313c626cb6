package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/siftr-probe/siftr-probe/internal/netlab"
	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
	"github.com/siftr-probe/siftr-probe/internal/syncbuf"
)

// TestIntegrationSecondSignal runs the command with its log on a pipe that
// nobody reads once the enable line is through, so that the graceful stop
// cannot finish: the first SIGINT starts it, the second must end the
// process at once, with status 130 and a line saying records may be lost.
func TestIntegrationSecondSignal(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true})
	listen(t, &lab.B, "10.77.0.2:5201")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var stderr syncbuf.Buffer
	cmd := exec.Command(exe, "--iface", lab.A.Iface, "--port", "5201", "--netns", lab.A.NetNS,
		"--logfile", "-", "--format", "jsonl", "--quiet")
	cmd.Env = append(os.Environ(), "SIFTR_PROBE_TEST_AS_MAIN=1")
	cmd.Stdout, cmd.Stderr = w, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited := false
	defer func() {
		if !exited {
			cmd.Process.Kill()
			<-done
		}
	}()

	// Read the enable line, then nothing more.
	first := make(chan string, 1)
	go func() {
		ln, _ := bufio.NewReader(r).ReadString('\n')
		first <- ln
	}()
	select {
	case ln := <-first:
		if !strings.Contains(ln, `"type":"enable"`) {
			t.Fatalf("first line %q, stderr %s", ln, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no enable line; stderr: %s", stderr.String())
	}
	// Far more records than the pipe holds: the writer blocks.
	send(t, &lab.A, "10.77.0.2:5201", 8<<20)
	time.Sleep(100 * time.Millisecond)

	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		exited = true
		t.Fatalf("exited (%v) on the first SIGINT although its output was stuck: the test cannot check the second; stderr: %s", err, stderr.String())
	case <-time.After(500 * time.Millisecond):
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		exited = true
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != exitForced {
			t.Errorf("exit: %v, want status %d", err, exitForced)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("still running 5s after a second SIGINT; stderr: %s", stderr.String())
	}
	msg := strings.TrimSpace(stderr.String())
	if !strings.HasPrefix(msg, "siftr-probe: second SIGINT: ") || !strings.Contains(msg, "records may be lost") || strings.Contains(msg, "\n") {
		t.Errorf("stderr %q, want one line saying records may be lost", msg)
	}
}

// TestIntegrationSymlinkedLog checks the one-line message for a log file
// that is a symbolic link.
func TestIntegrationSymlinkedLog(t *testing.T) {
	labtest.RequireRoot(t)
	dir := t.TempDir()
	link := filepath.Join(dir, "link.log")
	if err := os.Symlink(filepath.Join(dir, "target.log"), link); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--iface", "lo", "--logfile", link}, &stdout, &stderr); code != exitUsage {
		t.Errorf("exit %d, want %d", code, exitUsage)
	}
	if got, want := stderr.String(), "siftr-probe: cannot write log file "+link+": it is a symbolic link; refusing to follow it\n"; got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}
	if _, err := os.Lstat(filepath.Join(dir, "target.log")); err == nil {
		t.Error("the symlink's target was created")
	}
}

// TestIntegrationBrokenStdout runs the command with its log on a pipe whose
// reader goes away after the enable line, as "| head -1" does: the probe
// must not die of SIGPIPE, but stop, say why on stderr, and exit 1.
func TestIntegrationBrokenStdout(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true})
	listen(t, &lab.B, "10.77.0.2:5201")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncbuf.Buffer
	cmd := exec.Command(exe, "--iface", lab.A.Iface, "--port", "5201", "--netns", lab.A.NetNS,
		"--logfile", "-", "--quiet")
	cmd.Env = append(os.Environ(), "SIFTR_PROBE_TEST_AS_MAIN=1")
	cmd.Stdout, cmd.Stderr = w, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	ln, _ := bufio.NewReader(r).ReadString('\n')
	if !strings.HasPrefix(ln, "enable_time_secs=") {
		cmd.Process.Kill()
		<-done
		t.Fatalf("first line %q; stderr %s", ln, stderr.String())
	}
	r.Close()
	// Records to write into the closed pipe; the probe stops on its own.
	// The connection stays open until it has: on a busy machine a short
	// one can be over before its packets are looked up, and then there is
	// no record to write.
	var c net.Conn
	if err := lab.A.Do(func() (err error) { c, err = net.Dial("tcp", "10.77.0.2:5201"); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64<<10)
writing:
	for {
		select {
		case err = <-done:
			break writing
		default:
		}
		c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, werr := c.Write(buf); werr != nil && !errors.Is(werr, os.ErrDeadlineExceeded) {
			t.Fatalf("write: %v", werr)
		}
	}
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != exitError {
		t.Errorf("exit: %v, want status %d (a SIGPIPE death is %q)", err, exitError, "signal: broken pipe")
	}
	msg := stderr.String()
	if !strings.Contains(msg, "siftr-probe: standard output was closed (broken pipe): stopping") || !strings.Contains(msg, "broken pipe\n") {
		t.Errorf("stderr %q, want the stop and the write error", msg)
	}
}

// TestIntegrationFIFOLog checks that a FIFO as --logfile is refused at once
// (it used to block in open(2) after the rings were open, and ignore the
// first SIGTERM).
func TestIntegrationFIFOLog(t *testing.T) {
	labtest.RequireRoot(t)
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--iface", "lo", "--logfile", fifo}, &stdout, &stderr); code != exitUsage {
		t.Errorf("exit %d, want %d", code, exitUsage)
	}
	if got, want := stderr.String(), "siftr-probe: cannot write log file "+fifo+": it is a named pipe (FIFO), not a regular file\n"; got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}
}

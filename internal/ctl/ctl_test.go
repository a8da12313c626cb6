package ctl

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
)

// echo answers status with the request's command in Message and set with
// an error for value "bad".
func echo(rq *Request) *Response {
	if rq.Cmd == CmdSet && rq.Value == "bad" {
		return Errorf(ExitUsage, "bad "+rq.Name)
	}
	return &Response{Message: rq.Cmd + " " + rq.Name + " " + rq.Value, Status: &Status{PPL: 7}}
}

func listen(t *testing.T, path string) *Listener {
	t.Helper()
	l, err := Listen(path, &Config{Handler: echo})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func dial(t *testing.T, path string) *Client {
	t.Helper()
	c, err := Dial(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "ctl") // the directory is made
	l := listen(t, path)
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with mode 0600", fi.Mode())
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != os.Geteuid() {
		t.Errorf("socket owned by uid %d, want %d", st.Uid, os.Geteuid())
	}
	c := dial(t, path)
	for _, tc := range []struct {
		rq          Request
		ok          bool
		exit        int
		msg, errmsg string
	}{
		{Request{Cmd: CmdStatus}, true, 0, "status  ", ""},
		{Request{Cmd: CmdSet, Name: SetPPL, Value: "10"}, true, 0, "set ppl 10", ""},
		{Request{Cmd: CmdSet, Name: SetPort, Value: "bad"}, false, ExitUsage, "", "bad port"},
		{Request{Cmd: CmdSet, Name: "cwnd", Value: "1"}, false, ExitUsage, "", `cannot set "cwnd"`},
		{Request{Cmd: CmdSet}, false, ExitUsage, "", "set needs a name"},
		{Request{Cmd: CmdEnable, Value: "1"}, false, ExitUsage, "", "enable takes no name or value"},
		{Request{Cmd: "reboot"}, false, ExitUsage, "", `unknown command "reboot"`},
	} {
		r, err := c.Do(&tc.rq, time.Second)
		if err != nil {
			t.Fatalf("%+v: %v", tc.rq, err)
		}
		if r.OK != tc.ok || r.Exit != tc.exit || r.Message != tc.msg || !strings.Contains(r.Error, tc.errmsg) || r.V != Version {
			t.Errorf("%+v: got %+v, want ok %v exit %d message %q error %q", tc.rq, r, tc.ok, tc.exit, tc.msg, tc.errmsg)
		}
		if tc.ok && (r.Status == nil || r.Status.PPL != 7) {
			t.Errorf("%+v: status %+v not passed on", tc.rq, r.Status)
		}
	}
	l.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket still there after Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestRawProtocol speaks the protocol as a script would, through a plain
// connection: several requests on one connection, a wrong version, junk.
func TestRawProtocol(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl")
	listen(t, path)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(`{"v":1,"cmd":"status"}` + "\n\n" + `{"v":2,"cmd":"status"}` + "\n" + "status\n" + `{"v":1,"cmd":"enable"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(c)
	for _, want := range []string{
		`{"v":1,"ok":true,"message":"status  ",`,
		`{"v":1,"ok":false,"error":"unsupported protocol version 2 (this probe speaks version 1)","exit":2}`,
		`{"v":1,"ok":false,"error":"bad request: not a JSON object`,
		`{"v":1,"ok":true,"message":"enable  ",`,
	} {
		if !sc.Scan() {
			t.Fatalf("no response line for %s: %v", want, sc.Err())
		}
		if !strings.HasPrefix(sc.Text(), want) {
			t.Errorf("response %s, want %s...", sc.Text(), want)
		}
	}
}

func TestListenRefuses(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep me"), 0o644)
	linkDir := filepath.Join(dir, "linkdir")
	os.Mkdir(filepath.Join(dir, "realdir"), 0o755)
	os.Symlink(filepath.Join(dir, "realdir"), linkDir)
	live := filepath.Join(dir, "live")
	listen(t, live)
	for _, tc := range []struct{ path, want string }{
		{link, "is a symbolic link; refusing to follow it"},
		{file, "exists and is not a socket"},
		{filepath.Join(linkDir, "ctl"), "directory " + linkDir + " is a symbolic link"},
		{filepath.Join(file, "ctl"), "is not a directory"},
		{live, "is in use by a running process"},
		{filepath.Join(dir, strings.Repeat("x", 120)), "is too long"},
	} {
		l, err := Listen(tc.path, &Config{Handler: echo})
		if err == nil {
			l.Close()
			t.Errorf("Listen(%s) succeeded", tc.path)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Listen(%s): %v, want one line saying %q", tc.path, err, tc.want)
		}
	}
	if _, err := os.Lstat(target); err == nil {
		t.Error("the symlink's target was created")
	}
	if b, _ := os.ReadFile(file); string(b) != "keep me" {
		t.Error("the file was replaced")
	}
	if _, err := Dial(link, time.Second); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("Dial through a symlink: %v", err)
	}
	// The live probe still answers.
	if r, err := dial(t, live).Do(&Request{Cmd: CmdStatus}, time.Second); err != nil || !r.OK {
		t.Errorf("the live socket no longer answers: %+v %v", r, err)
	}
}

// TestStaleSocketReplaced: a socket a killed probe left behind (nothing
// listens on it) is replaced.
func TestStaleSocketReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := Dial(path, time.Second); err == nil || !strings.Contains(err.Error(), "nothing listens") {
		t.Errorf("Dial of a stale socket: %v", err)
	}
	listen(t, path)
	if r, err := dial(t, path).Do(&Request{Cmd: CmdStatus}, time.Second); err != nil || !r.OK {
		t.Errorf("after replacing the stale socket: %+v %v", r, err)
	}
	if _, err := Dial(filepath.Join(t.TempDir(), "none"), time.Second); err == nil || !strings.Contains(err.Error(), "no control socket at") {
		t.Errorf("Dial of a missing socket: %v", err)
	}
}

// asUser runs f on a thread of its own whose effective uid (and so its
// file system uid, and the peer credentials of the sockets it connects) is
// uid. The thread is thrown away afterwards.
func asUser(t *testing.T, uid int, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if _, _, errno := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); errno != 0 {
			t.Errorf("setresuid: %v", errno)
			return
		}
		f()
	}()
	<-done
}

// TestOtherUserRefused: another user cannot reach the socket (mode 0600)
// and, if the mode let them, would be refused by the peer check.
func TestOtherUserRefused(t *testing.T) {
	labtest.RequireRoot(t)
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // let the other user reach the socket
		os.Chmod(d, 0o755)
	}
	path := filepath.Join(dir, "ctl")
	refused := make(chan int, 1)
	l, err := Listen(path, &Config{Handler: echo, Refused: func(uid, pid int) { refused <- uid }})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const nobody = 65534
	asUser(t, nobody, func() {
		if _, err := Dial(path, time.Second); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("as uid %d with mode 0600: %v, want permission denied", nobody, err)
		}
	})
	// A socket made reachable by mistake: the peer check still refuses.
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	asUser(t, nobody, func() {
		c, err := Dial(path, time.Second)
		if err != nil {
			t.Errorf("as uid %d with mode 0666: %v", nobody, err)
			return
		}
		defer c.Close()
		r, err := c.Do(&Request{Cmd: CmdEnable}, time.Second)
		if err != nil {
			t.Errorf("as uid %d: %v", nobody, err)
			return
		}
		if r.OK || r.Exit != ExitUsage || !strings.Contains(r.Error, "permission denied: uid 65534 may not control this probe") {
			t.Errorf("as uid %d: %+v, want refused", nobody, r)
		}
	})
	select {
	case uid := <-refused:
		if uid != nobody {
			t.Errorf("Refused told uid %d, want %d", uid, nobody)
		}
	case <-time.After(time.Second):
		t.Error("Refused was not called")
	}
	// Root is still let in.
	if r, err := dial(t, path).Do(&Request{Cmd: CmdStatus}, time.Second); err != nil || !r.OK {
		t.Errorf("as root: %+v %v", r, err)
	}
}

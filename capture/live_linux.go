//go:build linux

package capture

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Liveness: telling a downed interface (capture resumes when it comes up)
// from a removed one (Run fails).

// ifExists reports whether an interface with index still exists in fd's
// network namespace.
func ifExists(fd, index int) bool {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return false
	}
	ifr.SetUint32(uint32(index))
	return !errors.Is(unix.IoctlIfreq(fd, unix.SIOCGIFNAME, ifr), unix.ENODEV)
}

// sockErr reads and clears the socket's pending error. The kernel reports
// ENETDOWN when the interface goes down; that is an error only if the
// interface is gone (capture resumes when a downed interface comes up). A
// deleted interface goes down first and reports nothing more when it is
// unregistered, so while the socket is down the idle loop checks that the
// interface still exists (see run).
func (w *worker) sockErr(s *sysCapture) error {
	v, err := unix.GetsockoptInt(w.fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return fmt.Errorf("capture: ring %d on %s: %w", w.id, s.cfg.Iface, os.NewSyscallError("getsockopt SO_ERROR", err))
	}
	errno := unix.Errno(v)
	switch {
	case errno == 0:
		return nil
	case errno == unix.ENETDOWN:
		w.down = true
		return w.checkInterface(s)
	}
	return fmt.Errorf("capture: ring %d on %s: %w", w.id, s.cfg.Iface, os.NewSyscallError("packet socket", errno))
}

// hasError reports whether the socket has an error pending, without
// clearing it.
func (w *worker) hasError() bool {
	fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0 && fds[0].Revents&unix.POLLERR != 0
}

// checkInterface returns an error wrapping ErrNoInterface if the captured
// interface no longer exists.
func (w *worker) checkInterface(s *sysCapture) error {
	if ifExists(w.fd, s.ifindex) {
		return nil
	}
	return fmt.Errorf("capture: ring %d on %s: %w (interface removed)", w.id, s.cfg.Iface, ErrNoInterface)
}

// Package netns runs code inside a Linux network namespace.
//
// Sockets keep the namespace they were created in: a function run by Do may
// open AF_PACKET rings, netlink sockets, listeners or connections, and the
// caller may use them from any goroutine afterwards.
//
// # Privileges
//
// Entering a namespace needs CAP_SYS_ADMIN.
package netns

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs fn on an OS thread locked inside the network namespace named by
// path (a file such as /var/run/netns/NAME or /proc/PID/ns/net). An empty
// path runs fn directly in the caller's namespace. The rest of the process
// stays where it is; a thread whose namespace could not be restored is never
// returned to the Go scheduler.
func Do(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	// O_NONBLOCK: a FIFO at path must fail setns, not block the open.
	target, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("open network namespace: %w", err)
	}
	defer target.Close()

	return onThread(func() error {
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter network namespace %s: %w", path, os.NewSyscallError("setns", err))
		}
		return nil
	}, fn)
}

// onThread runs enter and then fn on a new goroutine locked to its OS
// thread, and puts the thread back into the network namespace it started
// in. If enter fails, fn is not run and the thread is released unchanged.
// A thread whose namespace could not be restored stays locked, so it exits
// with the goroutine instead of returning to the scheduler.
func onThread(enter, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := enter(); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			errc <- fmt.Errorf("restore network namespace: %w", os.NewSyscallError("setns", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Create makes a new network namespace and pins it at /run/netns/name, where
// `ip netns` sees it too. It returns the path. Remove undoes it.
func Create(name string) (string, error) {
	dir := "/run/netns"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	path := dir + "/" + name
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return "", fmt.Errorf("create network namespace %s: %w", name, err)
	}
	f.Close()

	err = onThread(func() error {
		return os.NewSyscallError("unshare", unix.Unshare(unix.CLONE_NEWNET))
	}, func() error {
		return os.NewSyscallError("mount", unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, ""))
	})
	if err != nil {
		os.Remove(path)
		return "", fmt.Errorf("create network namespace %s: %w", name, err)
	}
	return path, nil
}

// Remove unpins a namespace made by Create; it disappears with its last user.
func Remove(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("remove network namespace %s: %w", path, os.NewSyscallError("umount", err))
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove network namespace %s: %w", path, err)
	}
	return nil
}

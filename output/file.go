package output

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// OpenFile opens path for writing under the rules every file the probe
// writes follows (the log, the stats file, the CPU profile), so that a
// mistake or a planted link cannot make it write somewhere else:
//
//   - a symbolic link is refused, never followed (O_NOFOLLOW);
//   - a missing file is created with mode 0644 less the umask; an existing
//     one keeps its mode and owner;
//   - only a regular file or a character device (/dev/null, a terminal) is
//     accepted: a directory, a named pipe (FIFO), a socket or a block
//     device is refused with an error that says so. The open itself never
//     waits (O_NONBLOCK, cleared once the file is open), so a FIFO without
//     a reader is refused at once instead of blocking.
//
// flag adds to O_WRONLY|O_CREATE|O_CLOEXEC: os.O_APPEND to append,
// os.O_TRUNC to replace, 0 to write from the start without truncating
// (for a file written later: truncate it then). what names the file in
// errors ("log file", "stats file"). The errors wrap the system's, so
// errors.Is(err, os.ErrPermission) and the like work.
func OpenFile(path, what string, flag int) (*os.File, error) {
	if path == "" {
		return nil, fmt.Errorf("output: %s: empty path", what)
	}
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC|unix.O_NOFOLLOW|unix.O_NONBLOCK|flag, 0o644)
	for err == unix.EINTR {
		fd, err = unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC|unix.O_NOFOLLOW|unix.O_NONBLOCK|flag, 0o644)
	}
	if err != nil {
		return nil, openError(path, what, &os.PathError{Op: "open", Path: path, Err: err})
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("output: %s %s: %w", what, path, os.NewSyscallError("fcntl", err))
	}
	f := os.NewFile(uintptr(fd), path)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("output: %s %s: %w", what, path, err)
	}
	if kind := fileKind(fi.Mode()); kind != "" {
		f.Close()
		return nil, fmt.Errorf("output: %s %s is %s, not a regular file", what, path, kind)
	}
	return f, nil
}

// fileKind names a file type OpenFile refuses, or returns "".
func fileKind(mode os.FileMode) string {
	switch {
	case mode.IsRegular(), mode&os.ModeCharDevice != 0:
		return ""
	case mode&os.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case mode&os.ModeSocket != 0:
		return "a socket"
	case mode&os.ModeDevice != 0:
		return "a block device"
	case mode.IsDir():
		return "a directory"
	}
	return "a special file"
}

// openError explains an open error in one line that names the file.
func openError(path, what string, err error) error {
	switch {
	case errors.Is(err, unix.ELOOP):
		if fi, lerr := os.Lstat(path); lerr == nil && fi.Mode()&os.ModeSymlink != 0 {
			return fmt.Errorf("output: %s %s is a symbolic link; refusing to follow it: %w", what, path, err)
		}
	case errors.Is(err, unix.EISDIR):
		return fmt.Errorf("output: %s %s is a directory: %w", what, path, err)
	case errors.Is(err, unix.ENXIO):
		// O_NONBLOCK|O_WRONLY on a FIFO without a reader, or a socket.
		kind := "a named pipe (FIFO) or a socket"
		if fi, lerr := os.Lstat(path); lerr == nil {
			switch {
			case fi.Mode()&os.ModeNamedPipe != 0:
				kind = "a named pipe (FIFO)"
			case fi.Mode()&os.ModeSocket != 0:
				kind = "a socket"
			}
		}
		return fmt.Errorf("output: %s %s is %s, not a regular file: %w", what, path, kind, err)
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("output: cannot create %s %s: its directory does not exist: %w", what, path, err)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("output: cannot open %s %s: permission denied: %w", what, path, err)
	}
	return fmt.Errorf("output: open %s: %w", what, err)
}

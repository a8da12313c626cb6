package ctl

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// A Handler answers one request from a peer allowed to send it. It may be
// called concurrently, from one goroutine per connection.
type Handler func(*Request) *Response

// Config configures a Listener.
type Config struct {
	// Handler answers the requests (required).
	Handler Handler
	// Refused, if set, is told of every connection refused for its peer's
	// uid, with the peer's uid and pid.
	Refused func(uid, pid int)
	// IdleTimeout closes a connection that sent no request for this long;
	// 0 means a minute.
	IdleTimeout time.Duration
}

// maxConns bounds the connections served at once; more wait to be
// accepted.
const maxConns = 16

// Listener is a control socket being served.
type Listener struct {
	path string
	ln   *net.UnixListener
	ino  uint64 // the socket file's inode, to remove it only if it is still ours
	cfg  Config
	uid  int

	wg        sync.WaitGroup
	mu        sync.Mutex // guards conns and closed
	conns     map[net.Conn]bool
	closed    bool
	closeOnce sync.Once
}

// maxPath is the longest socket path (sockaddr_un's sun_path, less the
// terminating NUL).
const maxPath = 107

// Listen makes the control socket at path and serves it with cfg's
// handler until Close. The socket's directory is made (mode 0755) if it is
// missing; neither it nor the socket may be a symbolic link. An existing
// socket at path that nothing listens on (a killed probe's) is replaced;
// one a process listens on is left alone, and Listen fails. Errors are one
// line and name the path.
func Listen(path string, cfg *Config) (*Listener, error) {
	if cfg == nil || cfg.Handler == nil {
		return nil, errors.New("ctl: no handler")
	}
	if path == "" {
		return nil, errors.New("ctl: empty control socket path")
	}
	if len(path) > maxPath {
		return nil, fmt.Errorf("control socket path %s is too long (%d bytes, at most %d)", path, len(path), maxPath)
	}
	if err := checkDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	if err := clearStale(path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("cannot make control socket %s: %w", path, unwrap(err))
	}
	ln.SetUnlinkOnClose(false) // Close removes it, if it is still ours
	// Until the chmod the socket has the umask's mode; the peer check
	// below refuses other users meanwhile.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		os.Remove(path)
		return nil, fmt.Errorf("cannot make control socket %s: %w", path, unwrap(err))
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("cannot make control socket %s: %w", path, unwrap(err))
	}
	l := &Listener{path: path, ln: ln, cfg: *cfg, uid: os.Geteuid(), conns: map[net.Conn]bool{}}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		l.ino = st.Ino
	}
	if l.cfg.IdleTimeout <= 0 {
		l.cfg.IdleTimeout = time.Minute
	}
	l.wg.Go(l.serve)
	return l, nil
}

// checkDir makes the socket's directory if it is missing, and refuses one
// that is a symbolic link or not a directory.
func checkDir(dir string) error {
	fi, err := os.Lstat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("cannot make control socket directory %s: %w", dir, unwrap(err))
		}
		fi, err = os.Lstat(dir)
		if err != nil {
			return fmt.Errorf("control socket directory %s: %w", dir, unwrap(err))
		}
	case err != nil:
		return fmt.Errorf("control socket directory %s: %w", dir, unwrap(err))
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		return fmt.Errorf("control socket directory %s is a symbolic link; refusing to follow it", dir)
	case !fi.IsDir():
		return fmt.Errorf("control socket directory %s is not a directory", dir)
	}
	return nil
}

// clearStale removes a socket at path that nothing listens on, and refuses
// anything else that is there.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("control socket %s: %w", path, unwrap(err))
	case fi.Mode()&os.ModeSymlink != 0:
		return fmt.Errorf("control socket %s is a symbolic link; refusing to follow it", path)
	case fi.Mode()&os.ModeSocket == 0:
		return fmt.Errorf("control socket %s exists and is not a socket; refusing to replace it", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	switch {
	case err == nil:
		c.Close()
		return fmt.Errorf("control socket %s is in use by a running process (another siftr-probe? give each its own --control)", path)
	case errors.Is(err, syscall.ECONNREFUSED):
		// Left behind by a run that was killed: replace it.
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("cannot replace the stale control socket %s: %w", path, unwrap(err))
		}
		return nil
	}
	return fmt.Errorf("control socket %s exists and cannot be checked: %w", path, unwrap(err))
}

// Path returns the socket's path.
func (l *Listener) Path() string { return l.path }

func (l *Listener) serve() {
	sem := make(chan struct{}, maxConns)
	for {
		sem <- struct{}{}
		c, err := l.ln.AcceptUnix()
		if err != nil {
			<-sem
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // EMFILE and the like: try again
			continue
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			c.Close()
			<-sem
			return
		}
		l.conns[c] = true
		l.mu.Unlock()
		l.wg.Go(func() {
			defer func() { <-sem }()
			l.handle(c)
			l.mu.Lock()
			delete(l.conns, c)
			l.mu.Unlock()
			c.Close()
		})
	}
}

// handle serves one connection: the peer check, then requests in turn.
func (l *Listener) handle(c *net.UnixConn) {
	uid, pid, err := peer(c)
	if err != nil {
		c.Write(encode(Errorf(ExitUsage, "cannot check the credentials of this connection: "+err.Error())))
		return
	}
	if uid != 0 && uid != l.uid {
		if l.cfg.Refused != nil {
			l.cfg.Refused(uid, pid)
		}
		c.Write(encode(Errorf(ExitUsage, fmt.Sprintf("permission denied: uid %d may not control this probe (only root and uid %d)", uid, l.uid))))
		return
	}
	rd := bufio.NewReaderSize(c, 4096)
	for {
		c.SetReadDeadline(time.Now().Add(l.cfg.IdleTimeout))
		line, err := readLine(rd)
		if err != nil {
			if errors.Is(err, errTooLong) {
				c.Write(encode(Errorf(ExitUsage, err.Error())))
			}
			return
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		c.SetWriteDeadline(time.Now().Add(l.cfg.IdleTimeout))
		if _, err := c.Write(encode(l.answer(line))); err != nil {
			return
		}
	}
}

var errTooLong = fmt.Errorf("request longer than %d bytes", MaxLine)

// readLine reads one line of at most MaxLine bytes, without its newline.
func readLine(rd *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		part, more, err := rd.ReadLine()
		if err != nil {
			return nil, err
		}
		line = append(line, part...)
		if len(line) > MaxLine {
			return nil, errTooLong
		}
		if !more {
			return line, nil
		}
	}
}

// answer decodes and checks one request and has the handler answer it.
func (l *Listener) answer(line []byte) *Response {
	var rq Request
	if err := json.Unmarshal(line, &rq); err != nil {
		return Errorf(ExitUsage, "bad request: not a JSON object with v and cmd: "+err.Error())
	}
	if rq.V != Version {
		return Errorf(ExitUsage, fmt.Sprintf("unsupported protocol version %d (this probe speaks version %d)", rq.V, Version))
	}
	switch rq.Cmd {
	case CmdStatus, CmdStats, CmdEnable, CmdDisable:
		if rq.Name != "" || rq.Value != "" {
			return Errorf(ExitUsage, fmt.Sprintf("%s takes no name or value", rq.Cmd))
		}
	case CmdSet:
		switch rq.Name {
		case SetPPL, SetPort, SetLogFile:
		case "":
			return Errorf(ExitUsage, "set needs a name: ppl, port or logfile")
		default:
			return Errorf(ExitUsage, fmt.Sprintf("cannot set %q (want ppl, port or logfile)", rq.Name))
		}
	case "":
		return Errorf(ExitUsage, "bad request: no cmd")
	default:
		return Errorf(ExitUsage, fmt.Sprintf("unknown command %q (want status, stats, enable, disable or set)", rq.Cmd))
	}
	r := l.cfg.Handler(&rq)
	if r == nil {
		r = Errorf(ExitFailed, "no answer")
	}
	r.V = Version
	if r.Error == "" {
		r.OK = true
	} else {
		r.OK = false
		if r.Exit == 0 {
			r.Exit = ExitFailed
		}
	}
	return r
}

// Close stops serving: it closes the socket and every connection, waits
// for their goroutines and removes the socket file if it is still the one
// Listen made. It is idempotent.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		for c := range l.conns {
			c.Close()
		}
		l.mu.Unlock()
		err = l.ln.Close()
		l.wg.Wait()
		if fi, serr := os.Lstat(l.path); serr == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Ino == l.ino && fi.Mode()&os.ModeSocket != 0 {
				os.Remove(l.path)
			}
		}
	})
	return err
}

// unwrap drops the *net.OpError and *os.PathError wrappers, which repeat
// the path, from a system error.
func unwrap(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		err = se.Err
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return err
}

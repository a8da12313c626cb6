package ctl

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

// Client is a connection to a probe's control socket. Its methods are for
// one goroutine at a time.
type Client struct {
	path string
	c    net.Conn
	rd   *bufio.Reader
}

// Dial connects to the control socket at path, within timeout. It refuses
// a path that is a symbolic link. Its errors are one line and say what to
// do: no probe there, a stale socket, no permission.
func Dial(path string, timeout time.Duration) (*Client, error) {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("no control socket at %s (is siftr-probe running, with --control %s?)", path, path)
	case errors.Is(err, os.ErrPermission):
		return nil, fmt.Errorf("cannot reach control socket %s: permission denied (it is for root and the probe's user)", path)
	case err != nil:
		return nil, fmt.Errorf("control socket %s: %w", path, unwrap(err))
	case fi.Mode()&os.ModeSymlink != 0:
		return nil, fmt.Errorf("control socket %s is a symbolic link; refusing to follow it", path)
	case fi.Mode()&os.ModeSocket == 0:
		return nil, fmt.Errorf("%s is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, timeout)
	switch {
	case err == nil:
		return &Client{path: path, c: c, rd: bufio.NewReaderSize(c, 4096)}, nil
	case errors.Is(err, syscall.ECONNREFUSED):
		return nil, fmt.Errorf("nothing listens on control socket %s (left by a probe that was killed?)", path)
	case errors.Is(err, os.ErrPermission):
		return nil, fmt.Errorf("cannot connect to control socket %s: permission denied (it is for root and the probe's user)", path)
	}
	return nil, fmt.Errorf("cannot connect to control socket %s: %w", path, unwrap(err))
}

// Do sends rq (its V set to Version) and returns the probe's response,
// which may be an error response (OK false). It waits at most timeout for
// it: enable and disable take as long as the probe needs to open or drain.
func (c *Client) Do(rq *Request, timeout time.Duration) (*Response, error) {
	r := *rq
	r.V = Version
	b, err := json.Marshal(&r)
	if err != nil {
		return nil, err
	}
	c.c.SetDeadline(time.Now().Add(timeout))
	_, werr := c.c.Write(append(b, '\n'))
	// A probe that refuses the connection answers before it reads and
	// closes: the answer may be there even if the write failed.
	line, err := readLine(c.rd)
	if werr != nil && err != nil {
		return nil, fmt.Errorf("send to control socket %s: %w", c.path, unwrap(werr))
	}
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, fmt.Errorf("no answer on control socket %s within %s", c.path, timeout)
		}
		return nil, fmt.Errorf("read from control socket %s: %w", c.path, unwrap(err))
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return nil, fmt.Errorf("bad answer on control socket %s: %w", c.path, err)
	}
	if resp.V != Version {
		return nil, fmt.Errorf("the probe on %s speaks protocol version %d, this client %d", c.path, resp.V, Version)
	}
	return &resp, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.c.Close() }

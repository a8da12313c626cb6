//go:build !linux

package diag

import (
	"fmt"
	"runtime"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// Client is a NETLINK_SOCK_DIAG client; it exists only on Linux.
type Client struct{}

// Open fails on this platform.
func Open(cfg *Config) (*Client, error) {
	return nil, fmt.Errorf("diag: not supported on %s", runtime.GOOS)
}

// Lookup fails on this platform.
func (c *Client) Lookup(qs []tcp.Query, out []tcp.Snapshot) error {
	return fmt.Errorf("diag: not supported on %s", runtime.GOOS)
}

// Stats returns zero counts on this platform.
func (c *Client) Stats() Stats { return Stats{} }

// Close does nothing on this platform.
func (c *Client) Close() error { return nil }

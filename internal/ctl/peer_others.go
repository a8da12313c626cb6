//go:build !linux

package ctl

import (
	"fmt"
	"net"
	"runtime"
)

func peer(*net.UnixConn) (uid, pid int, err error) {
	return 0, 0, fmt.Errorf("peer credentials not supported on %s", runtime.GOOS)
}

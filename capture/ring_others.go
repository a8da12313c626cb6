//go:build !linux

package capture

import (
	"context"
	"fmt"
	"runtime"
)

// sysCapture is empty where capture is not supported: open always fails, so
// no Capture exists and the methods below are never reached.
type sysCapture struct{ ifindex int }

func open(*Config) (*sysCapture, error) {
	return nil, fmt.Errorf("capture: not supported on %s", runtime.GOOS)
}

func (*sysCapture) run(context.Context, Handler) error {
	return fmt.Errorf("capture: not supported on %s", runtime.GOOS)
}

func (*sysCapture) stats() Stats { return Stats{} }

func (*sysCapture) setPort(uint16) (int64, error) {
	return 0, fmt.Errorf("capture: not supported on %s", runtime.GOOS)
}

func (*sysCapture) port() uint16 { return 0 }

func (*sysCapture) close() error { return nil }

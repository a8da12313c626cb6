//go:build !linux

package rcu

import (
	"fmt"
	"runtime"
)

func synchronize() error { return fmt.Errorf("rcu: not supported on %s", runtime.GOOS) }

//go:build linux

package rcu

import "golang.org/x/sys/unix"

// membarrierCmdGlobal is MEMBARRIER_CMD_GLOBAL (linux/membarrier.h): on a
// machine with more than one CPU the kernel runs synchronize_rcu(); on one
// CPU nothing else can be inside a critical section while the call runs.
const membarrierCmdGlobal = 1

func synchronize() error {
	_, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdGlobal, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// Package rcu waits for the kernel's read-side critical sections that were
// running when it was called: after Synchronize returns, every packet the
// kernel was handing to a socket filter, a packet ring or a tc program at
// the call has been handled to the end.
//
// The probe changes what the kernel does with packets while it runs: a
// new classic BPF filter on a packet ring (SO_ATTACH_FILTER), new settings
// for its eBPF programs. The kernel publishes such a change with RCU, so a
// packet being processed on another CPU can still be using the old filter
// or settings when the system call returns. Synchronize waits until no
// such packet is left (an RCU grace period: membarrier(2)
// MEMBARRIER_CMD_GLOBAL), so that the time read after it is later than
// every packet handled the old way.
//
// # Privileges
//
// None. Where membarrier(2) is refused (a kernel with nohz_full CPUs, a
// seccomp filter without it) Synchronize sleeps for Fallback instead,
// which covers a grace period on any machine that is not overloaded.
package rcu

import "time"

// Fallback is how long Synchronize sleeps when the kernel cannot wait for
// a grace period itself.
const Fallback = 20 * time.Millisecond

// Synchronize returns once every RCU read-side critical section of the
// kernel that had begun when it was called has ended. It reports whether
// the kernel waited (true) or Synchronize slept for Fallback (false).
func Synchronize() bool {
	if synchronize() == nil {
		return true
	}
	time.Sleep(Fallback)
	return false
}

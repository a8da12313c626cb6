//go:build !linux

package exact

import (
	"context"
	"errors"

	"github.com/siftr-probe/siftr-probe/correlate"
)

// ErrNoInterface is wrapped by the error Open returns when Config.Iface
// names no interface in the namespace.
var ErrNoInterface = errors.New("no such network interface")

// Source is the exact state source; it exists only on Linux.
type Source struct{}

// Open fails: exact mode needs Linux.
func Open(*Config) (*Source, error) {
	return nil, &UnavailableError{Reason: "exact mode needs Linux"}
}

func (*Source) Producers() int { return 1 }
func (*Source) Run(context.Context, *correlate.Engine) error {
	return errors.New("exact: not supported")
}
func (*Source) Stats() Stats { return Stats{} }

// Change fails: exact mode needs Linux.
func (*Source) Change(uint32, uint16) (int64, correlate.SampleCounts, error) {
	return 0, correlate.SampleCounts{}, errors.New("exact: not supported")
}
func (*Source) Sampled() correlate.SampleCounts { return correlate.SampleCounts{} }
func (*Source) Settings() (uint32, uint16)      { return 0, 0 }
func (*Source) Close() error                    { return nil }

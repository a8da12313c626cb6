// Package tcp is the vocabulary the pipeline's stages share: a TCP segment
// as a state source saw it (Packet) and the state of its socket (Snapshot,
// with Linux's struct tcp_info as Info), plus the Linux constants both are
// read with. Both state sources fill these types (capture and diag, from
// AF_PACKET rings and inet_diag replies; exact, from eBPF programs in the
// kernel), and correlate and output read them. The package is a leaf: it
// imports nothing of the project, and does no I/O.
package tcp

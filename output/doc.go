// Package output formats records and writes them, in packet-time order, to
// the log.
//
// A Record is one logged packet with the state of its socket. A Format turns
// records, and the lines that open and close a log, into bytes: SIFTR() is
// FreeBSD's SIFTR 1.3.0 text log, byte-compatible with its readers; JSONL()
// is one JSON object per line with more fields. FORMATS.md documents both.
// Formats append to caller-owned buffers and do not allocate.
//
// A Writer is the single goroutine that takes records from the producers
// (capture workers) through a bounded queue, merges them in time order using
// the producers' watermarks, formats them into a large buffer and writes it
// in big chunks. Producers never wait for it: Submit refuses records when the
// queue is full, and the caller counts them as skipped. See Writer for the
// ordering contract.
//
// # Concurrency
//
// Formats are stateless and safe for concurrent use. Writer.Submit and
// Writer.Advance are safe for concurrent use by different producers (one
// producer's calls must be sequential); every other Writer method is safe
// for concurrent use.
//
// # Privileges
//
// None beyond write access to the log file's directory.
package output

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
// # Packets beside the records (pcapng)
//
// A Pcap (OpenPcap, WriterConfig.Pcap) is a pcapng file of the packets
// beside the records: a Writer given a Pcap writes, for every record it
// logs, the packet's IP and TCP headers as an enhanced packet block (EPB)
// with the record's state in a comment, in the log's order, on the same
// goroutine, so that a Reopen switches both files at the same record. With
// PcapConfig.All it also writes the captured packets that were not logged,
// without a comment: the producers hand it every packet (SubmitPackets,
// through a bounded queue of its own, with watermarks of their own), and
// the writer merges them in time order with the records the log released,
// writing each record on its own packet (the same tcp.Packet value, which
// the watermarks bring out of the merge together) and the other packets
// plain.
//
// The section header and the one interface description block are written
// by gopacket's pcapgo.NgWriter (if_name is the captured interface,
// if_tsresol nanoseconds, LINKTYPE_RAW: no link-layer header is invented).
// pcapgo's NgWriter writes no per-packet options, so the EPBs are built
// here (pcapng: block type 6; options opt_comment 1 and epb_flags 2, each
// padded to 32 bits), into the Writer's buffer, so that a failed write can
// be cut back to the last whole block as the log is cut back to its last
// whole line.
//
// The records carry decoded fields, not the packet's bytes, so the headers
// are synthesized from tcp.Packet: IPv4 (20 bytes: DF, TTL 64, ID 0, a
// correct header checksum) or IPv6 (40 bytes: hop limit 64, flow label 0)
// by the addresses' family, then a TCP header of 20 bytes with the ports,
// seq, ack, flags and the raw window. The IP length fields say header +
// PayloadLen (IPv4 total length and IPv6 payload length saturate at
// 65535: a GSO/GRO buffer can be larger; the block's original length does
// not), so Wireshark shows the real payload size; the captured length is
// the headers only. What the records do not have is not there: TCP options
// (no timestamps, SACK blocks or window scale: Wireshark shows the raw
// window), the TCP checksum of a segment with payload (it covers the
// payload, which was never captured: it is 0, and Wireshark does not check
// it by default; a segment without payload gets the checksum of its
// synthesized header), the real TTL, TOS/ECN bits, IP ID and flow label.
//
// The comment of a logged packet holds the record's state, with the keys
// of the JSON lines format (FORMATS.md):
//
//	snd_cwnd=14480 snd_ssthresh=1073725440 srtt_us=204 flowid=476312 tcp_state=ESTABLISHED state_source=diag staleness_ns=610000
//
// epb_flags gives the direction: inbound 1, outbound 2.
//
// # Concurrency
//
// Formats are stateless and safe for concurrent use. Writer.Submit and
// Writer.Advance, and SubmitPackets and AdvancePackets, are safe for
// concurrent use by different producers (one producer's calls of each pair
// must be sequential); every other Writer method is safe
// for concurrent use.
//
// # Privileges
//
// None beyond write access to the log file's (and pcap file's) directory.
package output

/* Kernel-internal structures the programs read, declared with CO-RE
 * relocations (preserve_access_index): only the names and types of the
 * fields matter here. Their offsets, and the bit positions of bitfields,
 * are relocated at load time against the running kernel's BTF
 * (/sys/kernel/btf/vmlinux), so one object runs on every kernel that has
 * these fields. A field missing on some kernel fails the load with a
 * message naming it. Nested anonymous unions of the kernel's layout are
 * flattened: relocation finds a field by name through them.
 */
#ifndef SIFTR_KERNEL_H
#define SIFTR_KERNEL_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <stdbool.h>

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct sock_common {
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	struct {
		__s64 counter;
	} skc_cookie;
};

typedef struct {
	int owned;
} socket_lock_t;

struct sock {
	struct sock_common __sk_common;
	socket_lock_t sk_lock;
	int sk_rcvbuf;
	int sk_sndbuf;
	unsigned long sk_pacing_rate;
	u16 sk_protocol;
};

struct inet_sock {
	struct sock sk;
};

struct tcp_congestion_ops {
	char name[16];
};

struct inet_connection_sock {
	struct inet_sock icsk_inet;
	__u32 icsk_rto;
	const struct tcp_congestion_ops *icsk_ca_ops;
	__u8 icsk_ca_state : 5;
	__u8 icsk_retransmits;
	__u8 icsk_backoff;
	__u8 icsk_probes_out;
};

struct tcp_options_received {
	u16 tstamp_ok : 1;
	u16 wscale_ok : 1;
	u16 sack_ok : 3;
	u16 snd_wscale : 4;
	u16 rcv_wscale : 4;
};

struct minmax_sample {
	u32 t;
	u32 v;
};

struct minmax {
	struct minmax_sample s[3];
};

struct tcp_sock {
	struct inet_connection_sock inet_conn;
	u32 rcv_ssthresh;
	u32 reordering;
	u32 snd_wnd;
	u32 mss_cache;
	u32 snd_cwnd;
	u32 lost_out;
	u32 sacked_out;
	u32 copied_seq;
	u32 retrans_out;
	u16 advmss;
	u32 snd_ssthresh;
	struct minmax rtt_min;
	u32 segs_out;
	u32 data_segs_out;
	u64 bytes_sent;
	u32 write_seq;
	u32 mdev_us;
	u8 ecn_flags;
	u32 rcv_nxt;
	u32 snd_nxt;
	u32 snd_una;
	u32 srtt_us;
	u32 packets_out;
	u32 delivered;
	u32 delivered_ce;
	u32 rcv_wnd;
	struct tcp_options_received rx_opt;
	u64 bytes_received;
	u32 segs_in;
	u32 data_segs_in;
	u32 rate_delivered;
	u32 rate_interval_us;
	u64 bytes_acked;
	u32 dsack_dups;
	u8 syn_data_acked : 1;
	u32 reord_seen;
	u64 bytes_retrans;
	u32 total_retrans;
	u32 rcv_ooopack;
};

struct sk_buff {
	char cb[48];
};

/* TCP's control block in skb->cb. */
struct tcp_skb_cb {
	__u32 seq;
	__u32 end_seq;
	__u32 ack_seq;
};

#pragma clang attribute pop

#endif

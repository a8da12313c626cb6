// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * siftr-probe's exact state source: tc programs at ingress and egress of
 * the capture interface that read each TCP segment's socket at the
 * segment, as FreeBSD's SIFTR does from its pfil hooks.
 *
 * For each TCP segment on the port (settings.port, 0 = all) the program
 * counts the segment in its direction, finds its socket (egress: the
 * skb's own socket when it is the connection's; otherwise, and always at
 * ingress, a lookup by 4-tuple in the device's network namespace, which
 * tc ingress runs before TCP sees the segment), and classifies it as SIFTR
 * does: no connection socket (none, a listener, a request socket) is an
 * inpcb skip, a socket not established or without TCP state (SYN_SENT,
 * SYN_RECV, TIME_WAIT, CLOSE) a tcpcb skip. A segment of an established
 * (or later) socket advances the socket's ppl counter (per socket, both
 * directions, all CPUs), and every ppl-th one is written to the ring
 * buffer with the socket's state read at that moment. Every segment on the
 * port that is not written is counted under its reason, so user space keeps
 * SIFTR's conservation identity exactly. The programs never change what
 * happens to a packet: they always return TC_ACT_UNSPEC (TCX_NEXT).
 *
 * tc ingress runs before TCP, but not always right before: a segment can
 * wait in the socket's backlog while the application owns the socket, or
 * behind the other segments of a receive batch, while TCP processes the
 * ones ahead of it. The state it then meets is not the one tc read. So an
 * inbound record of an established socket is marked for confirmation, and
 * a third program at the kernel's tcp_probe tracepoint (the top of
 * tcp_rcv_established(), where TCP starts on a segment) writes the state
 * TCP then had, with the skb it is for: user space gives that state to the
 * record of that skb and of the segments coalesced into it.
 */
#include "kernel.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6
#define AF_INET 2
#define AF_INET6 10
#define TC_ACT_UNSPEC (-1)
#define PACKET_HOST 0

/* Linux TCP states (include/net/tcp_states.h). */
enum {
	TCP_ESTABLISHED = 1,
	TCP_SYN_SENT,
	TCP_SYN_RECV,
	TCP_FIN_WAIT1,
	TCP_FIN_WAIT2,
	TCP_TIME_WAIT,
	TCP_CLOSE,
	TCP_CLOSE_WAIT,
	TCP_LAST_ACK,
	TCP_LISTEN,
	TCP_CLOSING,
	TCP_NEW_SYN_RECV,
};

/* tcp_info option bits and ECN flags, as tcp_get_info() sets them. */
#define TCPI_OPT_TIMESTAMPS 1
#define TCPI_OPT_SACK 2
#define TCPI_OPT_WSCALE 4
#define TCPI_OPT_ECN 8
#define TCPI_OPT_ECN_SEEN 16
#define TCPI_OPT_SYN_DATA 32
#define TCP_ECN_OK 1
#define TCP_ECN_SEEN 8

/* Counter reasons; the order is the Go side's (exact.reason*). */
enum {
	R_PACKETS,     /* TCP segments on the port with a local direction */
	R_SAMPLED_OUT, /* not written because of ppl */
	R_MALLOC,      /* ring buffer full, or no room for the socket's state */
	R_TCPCB,       /* socket not established, or without TCP state */
	R_INPCB,       /* no connection socket */
	R_RECORDS,     /* written to the ring buffer */
	R_NOT_LOCAL,   /* inbound, not for this host (pkt_type), or VLAN-tagged */
	R_MALFORMED,   /* the IP layer would drop it: bad header checksum or lengths */
	R_CONFIRMS,    /* confirmations written (in [0]) and lost to a full ring (in [1]) */
	R_COUNT,
};

struct tally {
	__u64 n[2][R_COUNT]; /* [direction: 0 in, 1 out][reason] */
};

struct config {
	__u32 ppl;     /* log every ppl-th segment of each socket; 0 and 1: every one */
	__u16 port;    /* TCP port filter, host order; 0: all */
	__u8 enabled;  /* 0: count nothing, write nothing */
	__u8 l2len;    /* link-layer header bytes before IP (14 on Ethernet and lo); 0xff: unknown */
	__u32 wake_ns; /* wake the reader at most this often, per CPU */
	__u32 gen;     /* the ppl setting's generation: a socket's count restarts when it changes */
};

/* Kinds of event. */
enum {
	EV_RECORD,  /* a segment at tc, with its socket's state */
	EV_CONFIRM, /* the state TCP met for skb (tcp_probe): seq, payload_len
	             * (end_seq - seq) and ack are of the skb, coalesced */
};

/* One record: the segment's headers and its socket's state at it. */
struct event {
	__u64 time_ns;      /* bpf_ktime_get_ns() when the program saw the segment */
	__u64 skb;          /* the skb's address: matches a record to its confirmation */
	__u64 id;           /* the socket's identity: its cookie, or bit 63 | an id of ours */
	__u64 cookie;       /* the kernel's socket cookie now; 0 if none was made yet */
	__u64 bytes_acked;
	__u64 bytes_received;
	__u64 bytes_sent;
	__u64 bytes_retrans;
	__u64 pacing_rate;  /* bytes/s; ~0 = unlimited */
	__u64 delivery_rate;/* bytes/s, as tcp_compute_delivery_rate() */
	__u8 saddr[16];     /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u16 sport;        /* host order */
	__u16 dport;
	__u16 window;       /* raw TCP window field */
	__u8 flags;         /* TCP flags byte */
	__u8 dir;           /* 0 in, 1 out */
	__u8 ipver;         /* 4 or 6: the segment's IP version */
	__u8 family;        /* the socket's: AF_INET or AF_INET6 */
	__u8 state;         /* Linux TCP state */
	__u8 ca_state;
	__u8 options;       /* TCPI_OPT_* */
	__u8 snd_wscale;
	__u8 rcv_wscale;
	__u8 retransmits;
	__u8 probes;
	__u8 backoff;
	__u8 kind;          /* EV_RECORD, EV_CONFIRM */
	__u8 confirm;       /* a record that an EV_CONFIRM for its skb will follow */
	__u8 owned;         /* the application owned the socket: a record's skb went to
	                     * the backlog, a confirmation is from the backlog */
	__u8 pad1;
	__u16 advmss;
	__u32 seq;
	__u32 ack;
	__u32 payload_len;  /* from the IP length fields */
	__u32 snd_cwnd;     /* segments */
	__u32 snd_ssthresh; /* segments */
	__u32 srtt_us;      /* tp->srtt_us >> 3, as tcpi_rtt */
	__u32 rttvar_us;    /* tp->mdev_us >> 2, as tcpi_rttvar */
	__u32 rto;          /* jiffies (icsk_rto): user space converts with HZ */
	__u32 snd_wnd;
	__u32 rcv_wnd;
	__u32 mss_cache;    /* tcpi_snd_mss */
	__u32 sndbuf;
	__u32 rcvbuf;
	__u32 wqueue;       /* write_seq - snd_una, as idiag_wqueue */
	__u32 rqueue;       /* rcv_nxt - copied_seq, >= 0, as idiag_rqueue */
	__u32 notsent;      /* write_seq - snd_nxt, >= 0, as tcpi_notsent_bytes */
	__u32 min_rtt;
	__u32 packets_out;
	__u32 sacked_out;
	__u32 lost_out;
	__u32 retrans_out;
	__u32 total_retrans;
	__u32 delivered;
	__u32 delivered_ce;
	__u32 segs_in;
	__u32 segs_out;
	__u32 data_segs_in;
	__u32 data_segs_out;
	__u32 reordering;
	__u32 rcv_ssthresh;
	__u32 dsack_dups;
	__u32 reord_seen;
	__u32 rcv_ooopack;
	char cong[16];
};

/* Per-socket state of the programs, freed with the socket. */
struct sock_state {
	__u64 count;   /* segments of this socket counted for ppl, both directions, since
	                * the ppl setting of generation count >> COUNT_BITS (see advance) */
	__u64 id;
	__u64 pending; /* inbound records written but not yet confirmed */
};

/*
 * Settings change while the programs run without a program ever reading
 * half of a change: user space writes the slot not in force, then switches
 * slot[0] to it, then waits for an RCU grace period, after which no
 * program is still counting under the old slot (exact.Source.Change).
 * Each slot has its own counters, so that the counts made under one
 * setting are known exactly.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct config);
} settings SEC(".maps");

/* The settings slot in force: 0 or 1. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} slot SEC(".maps");

/* The counts, per settings slot. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct tally);
} counters SEC(".maps");

/* The size is set by user space (exact.Config.RingBytes). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

/* Per CPU: when submit may wake the reader next (bpf_ktime_get_ns). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} wakes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sock_state);
} socks SEC(".maps");

/* Names struct event in the object's BTF, for the Go bindings. */
const struct event *unused_event __attribute__((unused));

/* The next id for a socket whose cookie the kernel had not made yet. */
__u64 next_id = 0;

/* A parsed segment. */
struct pkt {
	struct bpf_sock_tuple tuple; /* as an inbound segment names it: saddr = remote */
	__u32 seq, ack, payload_len;
	__u16 sport, dport, window;  /* host order */
	__u8 flags, ipver;
	__u8 saddr[16], daddr[16];
};

enum { PARSE_OK, PARSE_IGNORE, PARSE_MALFORMED };

/* submit commits a reserved event, and wakes the reader at most once per
 * cfg->wake_ns on each CPU: a wake-up per record would cost more than the
 * record (and asking the ring how full it is costs a shared cache line);
 * between wake-ups the reader reads on its own timer. */
static __always_inline void submit(void *e, struct config *cfg, __u64 now)
{
	__u32 zero = 0;
	__u64 *next = bpf_map_lookup_elem(&wakes, &zero);
	__u64 flags = BPF_RB_NO_WAKEUP;
	if (next && now >= *next) {
		*next = now + cfg->wake_ns;
		flags = BPF_RB_FORCE_WAKEUP;
	}
	bpf_ringbuf_submit(e, flags);
}

static __always_inline void count(struct tally *c, __u8 dir, int reason)
{
	c->n[dir & 1][reason]++;
}

/* current finds the settings in force and their counters. */
static __always_inline int current(struct config **cfg, struct tally **c)
{
	__u32 zero = 0;
	__u32 *s = bpf_map_lookup_elem(&slot, &zero);
	if (!s)
		return -1;
	__u32 k = *s & 1;
	*cfg = bpf_map_lookup_elem(&settings, &k);
	*c = bpf_map_lookup_elem(&counters, &k);
	return *cfg && *c ? 0 : -1;
}

#define COUNT_BITS 48
#define COUNT_MASK ((1ULL << COUNT_BITS) - 1)

/*
 * advance counts one segment of a socket for ppl under the ppl setting of
 * generation gen and returns the socket's count since that setting came
 * into force (1 for its first segment): a change of ppl restarts every
 * socket's count. Segments of one socket on two CPUs advance it together.
 */
static __always_inline __u64 advance(__u64 *count, __u32 gen)
{
	__u64 tag = (__u64)(gen & 0xffff) << COUNT_BITS;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		__u64 old = *(volatile __u64 *)count;
		__u64 next = (old & ~COUNT_MASK) == tag ? old + 1 : (tag | 1);
		if (__sync_val_compare_and_swap(count, old, next) == old)
			return next & COUNT_MASK;
	}
	/* Four CPUs won the race in turn: count without the generation check. */
	return (__sync_fetch_and_add(count, 1) + 1) & COUNT_MASK;
}

/* fold turns a 32-bit ones' complement sum into 16 bits. */
static __always_inline __u16 fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/*
 * parse reads the segment's IP and TCP headers relative to the network
 * header, so it works on any link type and whatever the linear part of the
 * skb holds. At ingress it also checks what IP checks before TCP could see
 * the segment (ip_rcv_core, ipv6_rcv): versions, header lengths, the IPv4
 * header checksum, an IP length that fits the packet. Segments not on the
 * port are PARSE_IGNORE, before any other check can count them.
 */
static __always_inline int parse(struct __sk_buff *skb, struct pkt *p, struct config *cfg, bool ingress)
{
	__u32 off, iplen;
	__u8 proto;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		__u8 iph[20];
		if (bpf_skb_load_bytes_relative(skb, 0, iph, 20, BPF_HDR_START_NET))
			return PARSE_IGNORE;
		if (iph[9] != IPPROTO_TCP)
			return PARSE_IGNORE;
		__u32 ihl = (iph[0] & 0x0f) * 4;
		__u16 frag = ((__u16)iph[6] << 8 | iph[7]) & 0x1fff;
		if (frag)
			return PARSE_IGNORE; /* a later fragment: no TCP header, no ports */
		off = ihl;
		iplen = (__u32)iph[2] << 8 | iph[3];
		p->ipver = 4;
		__builtin_memcpy(p->saddr, &iph[12], 4);
		__builtin_memcpy(p->daddr, &iph[16], 4);
		p->tuple.ipv4.saddr = *(__be32 *)&iph[12];
		p->tuple.ipv4.daddr = *(__be32 *)&iph[16];
		__u8 th[20];
		if (ihl < 20 || bpf_skb_load_bytes_relative(skb, ihl & 0x3f, th, 20, BPF_HDR_START_NET))
			return PARSE_IGNORE; /* no ports to filter on */
		p->sport = (__u16)th[0] << 8 | th[1];
		p->dport = (__u16)th[2] << 8 | th[3];
		if (cfg->port && p->sport != cfg->port && p->dport != cfg->port)
			return PARSE_IGNORE;
		if (ingress) {
			if ((iph[0] >> 4) != 4 || iplen < ihl)
				return PARSE_MALFORMED;
			/* The header checksum, options included (4 bytes at a time). */
			__s64 sum = bpf_csum_diff(0, 0, (__be32 *)iph, 20, 0);
			for (__u32 o = 20; o < 60 && o < ihl && sum >= 0; o += 4) {
				__be32 w;
				if (bpf_skb_load_bytes_relative(skb, o, &w, 4, BPF_HDR_START_NET))
					return PARSE_MALFORMED;
				sum = bpf_csum_diff(0, 0, &w, 4, (__wsum)sum);
			}
			if (sum < 0 || fold(sum) != 0xffff)
				return PARSE_MALFORMED;
		}
		proto = IPPROTO_TCP;
		goto tcp;
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		__u8 ip6[40];
		if (bpf_skb_load_bytes_relative(skb, 0, ip6, 40, BPF_HDR_START_NET))
			return PARSE_IGNORE;
		proto = ip6[6];
		off = 40;
		iplen = 40 + ((__u32)ip6[4] << 8 | ip6[5]);
		p->ipver = 6;
		__builtin_memcpy(p->saddr, &ip6[8], 16);
		__builtin_memcpy(p->daddr, &ip6[24], 16);
		__builtin_memcpy(p->tuple.ipv6.saddr, &ip6[8], 16);
		__builtin_memcpy(p->tuple.ipv6.daddr, &ip6[24], 16);
		/* Walk the extension headers before TCP (at most 8). */
		for (int i = 0; i < 8; i++) {
			if (proto == IPPROTO_TCP)
				break;
			__u8 eh[2];
			if (proto == 0 || proto == 43 || proto == 60) { /* hop-by-hop, routing, destination */
				if (bpf_skb_load_bytes_relative(skb, off, eh, 2, BPF_HDR_START_NET))
					return PARSE_IGNORE;
				proto = eh[0];
				off += (eh[1] + 1) * 8;
			} else if (proto == 44) { /* fragment */
				__u8 fh[4];
				if (bpf_skb_load_bytes_relative(skb, off, fh, 4, BPF_HDR_START_NET))
					return PARSE_IGNORE;
				if ((((__u16)fh[2] << 8 | fh[3]) & 0xfff8) != 0)
					return PARSE_IGNORE; /* a later fragment */
				proto = fh[0];
				off += 8;
			} else if (proto == 51) { /* authentication header: length in 4-byte units */
				if (bpf_skb_load_bytes_relative(skb, off, eh, 2, BPF_HDR_START_NET))
					return PARSE_IGNORE;
				proto = eh[0];
				off += (eh[1] + 2) * 4;
			} else {
				return PARSE_IGNORE;
			}
		}
		if (proto != IPPROTO_TCP)
			return PARSE_IGNORE;
		__u8 th[20];
		if (bpf_skb_load_bytes_relative(skb, off & 0x7ff, th, 20, BPF_HDR_START_NET))
			return PARSE_IGNORE;
		p->sport = (__u16)th[0] << 8 | th[1];
		p->dport = (__u16)th[2] << 8 | th[3];
		if (cfg->port && p->sport != cfg->port && p->dport != cfg->port)
			return PARSE_IGNORE;
		if (ingress && (ip6[0] >> 4) != 6)
			return PARSE_MALFORMED;
		goto tcp;
	}
	return PARSE_IGNORE;

tcp:;
	__u8 th[20];
	if (bpf_skb_load_bytes_relative(skb, off & 0x7ff, th, 20, BPF_HDR_START_NET))
		return PARSE_MALFORMED;
	__u32 doff = (th[12] >> 4) * 4;
	if (doff < 20)
		return PARSE_MALFORMED;
	if (ingress) {
		if (off + doff > iplen)
			return PARSE_MALFORMED;
		/* The IP length must fit the packet (ip_rcv_core, ipv6_rcv); at tc
		 * ingress skb->len counts the link-layer header too. */
		if (cfg->l2len != 0xff && iplen + cfg->l2len > skb->len)
			return PARSE_MALFORMED;
	}
	if (p->ipver == 4) {
		p->tuple.ipv4.sport = bpf_htons(p->sport);
		p->tuple.ipv4.dport = bpf_htons(p->dport);
	} else {
		p->tuple.ipv6.sport = bpf_htons(p->sport);
		p->tuple.ipv6.dport = bpf_htons(p->dport);
	}
	p->seq = (__u32)th[4] << 24 | (__u32)th[5] << 16 | (__u32)th[6] << 8 | th[7];
	p->ack = (__u32)th[8] << 24 | (__u32)th[9] << 16 | (__u32)th[10] << 8 | th[11];
	p->flags = th[13];
	p->window = (__u16)th[14] << 8 | th[15];
	/* A BIG TCP buffer at egress has no IP length (0): its payload length is
	 * logged as 0. */
	p->payload_len = iplen > off + doff ? iplen - off - doff : 0;
	return PARSE_OK;
}

/* A socket found for a segment, and what SIFTR makes of it. */
enum { SK_LOG, SK_TCPCB, SK_INPCB };

/* classify applies SIFTR's skip rules to a socket in state st. */
static __always_inline int classify(__u32 st)
{
	switch (st) {
	case TCP_ESTABLISHED:
	case TCP_FIN_WAIT1:
	case TCP_FIN_WAIT2:
	case TCP_CLOSE_WAIT:
	case TCP_LAST_ACK:
	case TCP_CLOSING:
		return SK_LOG;
	case TCP_LISTEN:
	case TCP_NEW_SYN_RECV:
		return SK_INPCB; /* no connection socket yet: a listener, or the SYN queue */
	}
	return SK_TCPCB; /* SYN_SENT, SYN_RECV, TIME_WAIT, CLOSE */
}

/* lookup finds the socket a segment belongs to by its 4-tuple: an
 * established, TIME_WAIT or request socket, else a listener. tuple names
 * the segment as if it were inbound (saddr = the remote end). The result
 * holds a reference: release it with bpf_sk_release. */
static __always_inline struct bpf_sock *lookup(struct __sk_buff *skb, struct pkt *p, bool ingress)
{
	struct bpf_sock_tuple t = p->tuple;
	__u32 len = p->ipver == 4 ? sizeof(t.ipv4) : sizeof(t.ipv6);
	if (!ingress) {
		/* An outbound segment's socket is the one its reply would reach. */
		if (p->ipver == 4) {
			t.ipv4.saddr = p->tuple.ipv4.daddr;
			t.ipv4.daddr = p->tuple.ipv4.saddr;
			t.ipv4.sport = p->tuple.ipv4.dport;
			t.ipv4.dport = p->tuple.ipv4.sport;
		} else {
			__builtin_memcpy(t.ipv6.saddr, p->tuple.ipv6.daddr, 16);
			__builtin_memcpy(t.ipv6.daddr, p->tuple.ipv6.saddr, 16);
			t.ipv6.sport = p->tuple.ipv6.dport;
			t.ipv6.dport = p->tuple.ipv6.sport;
		}
	}
	return bpf_skc_lookup_tcp(skb, &t, len, BPF_F_CURRENT_NETNS, 0);
}

/* socket_id is the id user space names a socket by: its cookie when the
 * kernel made one already, else one of ours with bit 63 set (a socket that
 * receives before it ever sent: a server's, right after the handshake). */
static __always_inline __u64 socket_id(struct tcp_sock *tp)
{
	__u64 c = tp->inet_conn.icsk_inet.sk.__sk_common.skc_cookie.counter;
	if (c)
		return c;
	return (1ULL << 63) | __sync_fetch_and_add(&next_id, 1);
}

/* fill copies the segment and its socket's state into e, as tcp_get_info()
 * and inet_diag would report them at this moment. */
static __always_inline void fill(struct event *e, struct tcp_sock *tp, __u64 now, __u64 id)
{
	struct sock *sk = &tp->inet_conn.icsk_inet.sk;
	struct inet_connection_sock *icsk = &tp->inet_conn;

	e->time_ns = now;
	e->id = id;
	e->cookie = sk->__sk_common.skc_cookie.counter;
	e->family = sk->__sk_common.skc_family;
	e->owned = sk->sk_lock.owned != 0;
	e->state = sk->__sk_common.skc_state;
	e->ca_state = BPF_CORE_READ_BITFIELD(tp, inet_conn.icsk_ca_state);
	e->retransmits = icsk->icsk_retransmits;
	e->probes = icsk->icsk_probes_out;
	e->backoff = icsk->icsk_backoff;
	e->rto = icsk->icsk_rto;
	const struct tcp_congestion_ops *ops = icsk->icsk_ca_ops;
	if (ops)
		bpf_probe_read_kernel(e->cong, sizeof(e->cong), ops->name);

	__u8 opt = 0;
	if (BPF_CORE_READ_BITFIELD(tp, rx_opt.tstamp_ok))
		opt |= TCPI_OPT_TIMESTAMPS;
	if (BPF_CORE_READ_BITFIELD(tp, rx_opt.sack_ok))
		opt |= TCPI_OPT_SACK;
	if (BPF_CORE_READ_BITFIELD(tp, rx_opt.wscale_ok)) {
		opt |= TCPI_OPT_WSCALE;
		e->snd_wscale = BPF_CORE_READ_BITFIELD(tp, rx_opt.snd_wscale);
		e->rcv_wscale = BPF_CORE_READ_BITFIELD(tp, rx_opt.rcv_wscale);
	}
	__u8 ecn = tp->ecn_flags;
	if (ecn & TCP_ECN_OK)
		opt |= TCPI_OPT_ECN;
	if (ecn & TCP_ECN_SEEN)
		opt |= TCPI_OPT_ECN_SEEN;
	if (BPF_CORE_READ_BITFIELD(tp, syn_data_acked))
		opt |= TCPI_OPT_SYN_DATA;
	e->options = opt;

	e->snd_cwnd = tp->snd_cwnd;
	e->snd_ssthresh = tp->snd_ssthresh;
	e->srtt_us = tp->srtt_us >> 3;
	e->rttvar_us = tp->mdev_us >> 2;
	e->snd_wnd = tp->snd_wnd;
	e->rcv_wnd = tp->rcv_wnd;
	__u32 mss = tp->mss_cache;
	e->mss_cache = mss;
	e->advmss = tp->advmss;
	e->sndbuf = sk->sk_sndbuf;
	e->rcvbuf = sk->sk_rcvbuf;

	__u32 write_seq = tp->write_seq, snd_una = tp->snd_una, snd_nxt = tp->snd_nxt;
	__s32 rq = (__s32)(tp->rcv_nxt - tp->copied_seq);
	__s32 ns = (__s32)(write_seq - snd_nxt);
	e->wqueue = write_seq - snd_una;
	e->rqueue = rq > 0 ? rq : 0;
	e->notsent = ns > 0 ? ns : 0;

	e->min_rtt = tp->rtt_min.s[0].v;
	e->packets_out = tp->packets_out;
	e->sacked_out = tp->sacked_out;
	e->lost_out = tp->lost_out;
	e->retrans_out = tp->retrans_out;
	e->total_retrans = tp->total_retrans;
	e->delivered = tp->delivered;
	e->delivered_ce = tp->delivered_ce;
	e->segs_in = tp->segs_in;
	e->segs_out = tp->segs_out;
	e->data_segs_in = tp->data_segs_in;
	e->data_segs_out = tp->data_segs_out;
	e->reordering = tp->reordering;
	e->rcv_ssthresh = tp->rcv_ssthresh;
	e->dsack_dups = tp->dsack_dups;
	e->reord_seen = tp->reord_seen;
	e->rcv_ooopack = tp->rcv_ooopack;
	e->bytes_acked = tp->bytes_acked;
	e->bytes_received = tp->bytes_received;
	e->bytes_sent = tp->bytes_sent;
	e->bytes_retrans = tp->bytes_retrans;

	__u64 rate = sk->sk_pacing_rate;
	e->pacing_rate = rate == ~0UL ? ~0ULL : rate;
	__u32 delivered = tp->rate_delivered, interval = tp->rate_interval_us;
	e->delivery_rate = delivered && interval ? (__u64)delivered * mss * 1000000 / interval : 0;
}

/* headers copies the segment's own fields into e. */
static __always_inline void headers(struct event *e, struct pkt *p, __u8 dir)
{
	__builtin_memcpy(e->saddr, p->saddr, 16);
	__builtin_memcpy(e->daddr, p->daddr, 16);
	e->sport = p->sport;
	e->dport = p->dport;
	e->seq = p->seq;
	e->ack = p->ack;
	e->payload_len = p->payload_len;
	e->window = p->window;
	e->flags = p->flags;
	e->dir = dir;
	e->ipver = p->ipver;
}

/*
 * record decides one segment from its socket sk, found by the caller, and
 * writes it if SIFTR logs it; it releases sk if it was looked up (owned).
 */
static __always_inline void record(struct __sk_buff *skb, struct tally *c, struct config *cfg,
				   struct pkt *p, struct bpf_sock *sk, bool owned, __u8 dir, __u64 now)
{
	int verdict = classify(sk->state);
	if (verdict != SK_LOG) {
		count(c, dir, verdict == SK_INPCB ? R_INPCB : R_TCPCB);
		goto out;
	}
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (!tp) {
		count(c, dir, R_TCPCB); /* not a full TCP socket */
		goto out;
	}
	struct sock_state *st = bpf_sk_storage_get(&socks, tp, 0, 0);
	if (!st) {
		struct sock_state init = {.id = socket_id(tp)};
		st = bpf_sk_storage_get(&socks, tp, &init, BPF_SK_STORAGE_GET_F_CREATE);
		if (!st) {
			count(c, dir, R_MALLOC);
			goto out;
		}
	}
	__u32 ppl = cfg->ppl;
	if (ppl > 1) {
		__u64 n = advance(&st->count, cfg->gen);
		if (n % ppl) {
			count(c, dir, R_SAMPLED_OUT);
			goto out;
		}
	}
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(c, dir, R_MALLOC);
		goto out;
	}
	fill(e, tp, now, st->id);
	headers(e, p, dir);
	e->kind = EV_RECORD;
	e->skb = (__u64)skb;
	/* tcp_probe fires only in tcp_rcv_established(). */
	e->confirm = dir == 0 && e->state == TCP_ESTABLISHED;
	if (e->confirm)
		__sync_fetch_and_add(&st->pending, 1);
	submit(e, cfg, now);
	count(c, dir, R_RECORDS);
out:
	if (owned)
		bpf_sk_release(sk);
}

static __always_inline int handle(struct __sk_buff *skb, bool ingress)
{
	__u64 now = bpf_ktime_get_ns();
	struct config *cfg;
	struct tally *c;
	if (current(&cfg, &c) || !cfg->enabled)
		return TC_ACT_UNSPEC;

	struct pkt p = {};
	int r = parse(skb, &p, cfg, ingress);
	if (r == PARSE_IGNORE)
		return TC_ACT_UNSPEC;
	__u8 dir = ingress ? 0 : 1;
	if (ingress && (skb->pkt_type != PACKET_HOST || skb->vlan_present)) {
		/* Not for this host's sockets: forwarded, broadcast, or tagged
		 * with a VLAN that a VLAN device (not this one) receives. */
		count(c, dir, R_NOT_LOCAL);
		return TC_ACT_UNSPEC;
	}
	if (r == PARSE_MALFORMED) {
		count(c, dir, R_MALFORMED);
		return TC_ACT_UNSPEC;
	}
	count(c, dir, R_PACKETS);

	if (!ingress) {
		/* The sending socket, when the skb is the connection's own (not a
		 * reply the kernel sent on a socket's behalf: TIME_WAIT ACKs and
		 * RSTs go out on a per-CPU control socket). */
		struct bpf_sock *sk = skb->sk;
		if (sk && sk->src_port == p.sport && sk->dst_port == bpf_htons(p.dport)) {
			bpf_get_socket_cookie(skb); /* make the cookie, for ingress to find */
			record(skb, c, cfg, &p, sk, false, dir, now);
			return TC_ACT_UNSPEC;
		}
	}
	struct bpf_sock *sk = lookup(skb, &p, ingress);
	if (!sk) {
		count(c, dir, R_INPCB);
		return TC_ACT_UNSPEC;
	}
	record(skb, c, cfg, &p, sk, true, dir, now);
	return TC_ACT_UNSPEC;
}

/*
 * siftr_tcp runs at the tcp_probe tracepoint, where TCP starts on an
 * inbound segment of an established socket (any socket of the host: it
 * returns at once for sockets without records waiting), and writes the
 * state TCP meets, for user space to confirm the records with.
 */
SEC("tp_btf/tcp_probe")
int siftr_tcp(__u64 *ctx)
{
	struct sock *sk = (struct sock *)ctx[0];
	struct sk_buff *skb = (struct sk_buff *)ctx[1];
	struct sock_state *st = bpf_sk_storage_get(&socks, sk, 0, 0);
	if (!st || st->pending == 0)
		return 0;
	__sync_fetch_and_add(&st->pending, -1);
	__u64 now = bpf_ktime_get_ns();
	struct config *cfg;
	struct tally *c;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (current(&cfg, &c) || !tp)
		return 0;
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(c, 1, R_CONFIRMS); /* the record keeps the state tc read */
		return 0;
	}
	fill(e, tp, now, st->id);
	struct tcp_skb_cb *cb = (struct tcp_skb_cb *)skb->cb;
	__u32 seq = BPF_CORE_READ(cb, seq);
	e->seq = seq;
	e->payload_len = BPF_CORE_READ(cb, end_seq) - seq;
	e->ack = BPF_CORE_READ(cb, ack_seq);
	e->kind = EV_CONFIRM;
	e->skb = (__u64)skb;
	submit(e, cfg, now);
	count(c, 0, R_CONFIRMS);
	return 0;
}

SEC("tc")
int siftr_ingress(struct __sk_buff *skb)
{
	return handle(skb, true);
}

SEC("tc")
int siftr_egress(struct __sk_buff *skb)
{
	return handle(skb, false);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";

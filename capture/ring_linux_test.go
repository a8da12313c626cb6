//go:build linux

package capture

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestKernelStructLayout checks the x/sys/unix mirrors the ring reads
// against the kernel's uapi layouts (linux/if_packet.h), the same on every
// architecture.
func TestKernelStructLayout(t *testing.T) {
	var h unix.Tpacket3Hdr
	var bd unix.TpacketBlockDesc
	var v1 unix.TpacketHdrV1
	var sll unix.RawSockaddrLinklayer
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(tpacket3_hdr)", unsafe.Sizeof(h), 48},
		{"tpacket3_hdr.tp_next_offset", unsafe.Offsetof(h.Next_offset), 0},
		{"tpacket3_hdr.tp_sec", unsafe.Offsetof(h.Sec), 4},
		{"tpacket3_hdr.tp_nsec", unsafe.Offsetof(h.Nsec), 8},
		{"tpacket3_hdr.tp_snaplen", unsafe.Offsetof(h.Snaplen), 12},
		{"tpacket3_hdr.tp_len", unsafe.Offsetof(h.Len), 16},
		{"tpacket3_hdr.tp_status", unsafe.Offsetof(h.Status), 20},
		{"tpacket3_hdr.tp_mac", unsafe.Offsetof(h.Mac), 24},
		{"tpacket3_hdr.tp_net", unsafe.Offsetof(h.Net), 26},
		{"TPACKET_ALIGN(sizeof(tpacket3_hdr))", uintptr(tpacketHdrLen), 48},
		{"sizeof(tpacket_block_desc)", unsafe.Sizeof(bd), 48},
		{"tpacket_block_desc.hdr", unsafe.Offsetof(bd.Hdr), 8},
		{"sizeof(tpacket_hdr_v1)", unsafe.Sizeof(v1), 40},
		{"tpacket_hdr_v1.block_status", unsafe.Offsetof(v1.Block_status), 0},
		{"tpacket_hdr_v1.num_pkts", unsafe.Offsetof(v1.Num_pkts), 4},
		{"tpacket_hdr_v1.offset_to_first_pkt", unsafe.Offsetof(v1.Offset_to_first_pkt), 8},
		{"tpacket_hdr_v1.blk_len", unsafe.Offsetof(v1.Blk_len), 12},
		{"tpacket_hdr_v1.seq_num", unsafe.Offsetof(v1.Seq_num), 16},
		{"sizeof(sockaddr_ll)", unsafe.Sizeof(sll), 20},
		{"sockaddr_ll.sll_hatype", unsafe.Offsetof(sll.Hatype), 8},
		{"sockaddr_ll.sll_pkttype", unsafe.Offsetof(sll.Pkttype), 10},
		{"tpacket3_hdr.hv1.tp_vlan_tci", unsafe.Offsetof(h.Hv1) + unsafe.Offsetof(h.Hv1.Vlan_tci), 32},
		{"sizeof(tpacket_req3)", unsafe.Sizeof(unix.TpacketReq3{}), 28},
		// block.go's portable offsets and constants.
		{"offFrameNext", offFrameNext, unsafe.Offsetof(h.Next_offset)},
		{"offFrameSec", offFrameSec, unsafe.Offsetof(h.Sec)},
		{"offFrameNsec", offFrameNsec, unsafe.Offsetof(h.Nsec)},
		{"offFrameSnaplen", offFrameSnaplen, unsafe.Offsetof(h.Snaplen)},
		{"offFrameLen", offFrameLen, unsafe.Offsetof(h.Len)},
		{"offFrameStatus", offFrameStatus, unsafe.Offsetof(h.Status)},
		{"offFrameMac", offFrameMac, unsafe.Offsetof(h.Mac)},
		{"offFrameNet", offFrameNet, unsafe.Offsetof(h.Net)},
		{"offFrameVLANTCI", offFrameVLANTCI, unsafe.Offsetof(h.Hv1) + unsafe.Offsetof(h.Hv1.Vlan_tci)},
		{"blockHdrOff", blockHdrOff, unsafe.Offsetof(bd.Hdr)},
		{"offBlkStatus", offBlkStatus, unsafe.Offsetof(v1.Block_status)},
		{"offBlkNumPkts", offBlkNumPkts, unsafe.Offsetof(v1.Num_pkts)},
		{"offBlkFirst", offBlkFirst, unsafe.Offsetof(v1.Offset_to_first_pkt)},
		{"sllLen", sllLen, unsafe.Sizeof(sll)},
		{"offSllHatype", offSllHatype, unsafe.Offsetof(sll.Hatype)},
		{"offSllPkttype", offSllPkttype, unsafe.Offsetof(sll.Pkttype)},
		{"statusUser", statusUser, unix.TP_STATUS_USER},
		{"statusKernel", statusKernel, unix.TP_STATUS_KERNEL},
		{"statusVLANValid", statusVLANValid, unix.TP_STATUS_VLAN_VALID},
		{"pktHost", pktHost, unix.PACKET_HOST},
		{"pktOutgoing", pktOutgoing, unix.PACKET_OUTGOING},
		{"arphrdEther", arphrdEther, unix.ARPHRD_ETHER},
		{"arphrdLoopback", arphrdLoopback, unix.ARPHRD_LOOPBACK},
		{"sizeof(tpacket_stats_v3)", unsafe.Sizeof(unix.TpacketStatsV3{}), 12},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

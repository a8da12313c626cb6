package exact

// The programs are compiled into probe_bpfel.o and probe_bpfeb.o, committed
// with their Go bindings so that building needs no clang. Regenerate after
// changing bpf/: go generate ./exact/ (needs clang, llvm-strip and
// libbpf's headers: Debian's clang, llvm and libbpf-dev).
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/x86_64-linux-gnu" -no-global-types -type event -type tally -type config -type sock_state probe bpf/probe.bpf.c

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/siftr-probe/siftr-probe/internal/netlab"
	"github.com/siftr-probe/siftr-probe/internal/netns"
	"github.com/siftr-probe/siftr-probe/internal/traffic"
)

// port is the port every scenario uses (iperf3's).
const port = 5201

// benchLab is a netlab lab plus what the suite needs around it: interface
// counters of veth-a and the traffic servers in namespace B.
type benchLab struct {
	*netlab.Lab
	hA      *netlink.Handle
	iperfSv *exec.Cmd
	builtin *traffic.Server
	discard *exec.Cmd
}

func newBenchLab(noOffloads bool) (*benchLab, error) {
	lab, err := netlab.New(netlab.Config{Name: "sbench", NoOffloads: noOffloads})
	if err != nil {
		return nil, err
	}
	l := &benchLab{Lab: lab}
	ns, err := vnetns.GetFromPath(lab.A.NetNS)
	if err != nil {
		l.Close()
		return nil, err
	}
	defer ns.Close()
	if l.hA, err = netlink.NewHandleAt(ns); err != nil {
		l.Close()
		return nil, fmt.Errorf("netlink in %s: %w", lab.A.NetNS, err)
	}
	return l, nil
}

// nsName is the name `ip netns` knows a namespace path by.
func nsName(path string) string { return filepath.Base(path) }

// offered returns veth-a's tx+rx packet counters.
func (l *benchLab) offered() (uint64, error) {
	link, err := l.hA.LinkByName(l.A.Iface)
	if err != nil {
		return 0, err
	}
	st := link.Attrs().Statistics
	if st == nil {
		return 0, errors.New("no link statistics")
	}
	return st.TxPackets + st.RxPackets, nil
}

func (l *benchLab) Close() {
	if l.iperfSv != nil {
		stopCmd(l.iperfSv, 2*time.Second)
	}
	if l.builtin != nil {
		l.builtin.Close()
	}
	if l.discard != nil {
		stopCmd(l.discard, 5*time.Second)
	}
	if l.hA != nil {
		l.hA.Close()
	}
	l.Lab.Close()
}

// sysctlA sets sysctls in namespace A.
func (l *benchLab) sysctlA(kv ...string) error {
	args := append([]string{"netns", "exec", nsName(l.A.NetNS), "sysctl", "-q", "-w"}, kv...)
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("sysctl %v: %v: %s", kv, err, out)
	}
	return nil
}

// startServer starts the receiver on port 5201 in namespace B: iperf3 -s
// when useIperf, otherwise the built-in discard server; in a process of its
// own when separate (10,000 connections need 20,000 descriptors, more than
// one process may have here).
func (l *benchLab) startServer(useIperf, separate bool) error {
	if separate {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		cmd := command("ip", "netns", "exec", nsName(l.B.NetNS), self, "-discard-server", fmt.Sprintf(":%d", port))
		cmd.Stderr = os.Stderr
		if err := start(cmd); err != nil {
			return err
		}
		l.discard = cmd
		return waitListen(l.B.NetNS)
	}
	if !useIperf {
		return netns.Do(l.B.NetNS, func() error {
			ln, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
			if err != nil {
				return err
			}
			l.builtin = traffic.Serve(ln)
			return nil
		})
	}
	cmd := command("ip", "netns", "exec", nsName(l.B.NetNS), "iperf3", "-s", "-p", fmt.Sprint(port))
	if err := start(cmd); err != nil {
		return err
	}
	l.iperfSv = cmd
	return waitListen(l.B.NetNS)
}

func waitListen(nsPath string) error {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := exec.Command("ss", "-N", nsName(nsPath), "-Hltn", fmt.Sprintf("sport = :%d", port)).Output()
		if strings.Contains(string(out), "LISTEN") {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("the server did not start listening")
}

// discardServer is the -discard-server mode: a built-in discard server on
// addr until SIGINT or SIGTERM.
func discardServer(addr string) error {
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil {
		lim.Cur = lim.Max
		unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := traffic.Serve(ln)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	return srv.Close()
}

// bulk sends from A to B for d over parallel connections and returns the
// sender's throughput in bit/s. iperfArgs are added to iperf3's; the
// built-in generator ignores them.
func (l *benchLab) bulk(ctx context.Context, useIperf bool, parallel int, d time.Duration, iperfArgs ...string) (float64, error) {
	if useIperf {
		secs := fmt.Sprintf("%.3f", d.Seconds())
		args := append([]string{"netns", "exec", nsName(l.A.NetNS), "iperf3", "-c", l.B.Addr4.String(),
			"-p", fmt.Sprint(port), "-t", secs, "-P", fmt.Sprint(parallel), "-J"}, iperfArgs...)
		cmd := command("ip", args...)
		var out strings.Builder
		cmd.Stdout = &out
		if err := runCtx(ctx, cmd); err != nil {
			return 0, fmt.Errorf("iperf3 client: %w: %.300s", err, out.String())
		}
		var res struct {
			End struct {
				SumSent struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_sent"`
			} `json:"end"`
		}
		if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
			return 0, fmt.Errorf("iperf3 -J output: %w", err)
		}
		return res.End.SumSent.BitsPerSecond, nil
	}
	conns := make([]net.Conn, parallel)
	err := netns.Do(l.A.NetNS, func() error {
		for i := range conns {
			c, err := net.Dial("tcp", net.JoinHostPort(l.B.Addr4.String(), fmt.Sprint(port)))
			if err != nil {
				return err
			}
			conns[i] = c
		}
		return nil
	})
	if err != nil {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		return 0, err
	}
	tctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var sent atomic.Int64
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, _ := traffic.Send(tctx, c, 0)
			sent.Add(r.Bytes)
		}()
	}
	wg.Wait()
	return float64(sent.Load()) * 8 / d.Seconds(), nil
}

// inNS runs fn on a fresh OS thread moved into the namespace at path. The
// thread is never handed back to the scheduler: it exits with the goroutine.
func inNS(path string, fn func()) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		errc <- err
		if err == nil {
			fn()
		}
	}()
	return <-errc
}

// churn opens, sends 16 KiB over and closes connections from A to the
// built-in server in B, from several goroutines, for d. It returns the
// number of connections completed and failed, and the first failure.
func (l *benchLab) churn(ctx context.Context, goroutines int, d time.Duration) (ok, bad int64, first error) {
	tctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var done, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	fail := func(err error) {
		failed.Add(1)
		if tctx.Err() == nil {
			firstErr.CompareAndSwap(nil, &err)
		}
	}
	var wg sync.WaitGroup
	addr := net.JoinHostPort(l.B.Addr4.String(), fmt.Sprint(port))
	for range goroutines {
		wg.Add(1)
		err := inNS(l.A.NetNS, func() {
			defer wg.Done()
			var dl net.Dialer
			for tctx.Err() == nil {
				c, err := dl.DialContext(tctx, "tcp", addr)
				if err != nil {
					if tctx.Err() == nil {
						fail(err)
					}
					continue
				}
				if _, err := traffic.Send(context.Background(), c, 16<<10); err != nil {
					fail(err)
					continue
				}
				done.Add(1)
			}
		})
		if err != nil {
			wg.Done()
			cancel()
			wg.Wait()
			return done.Load(), failed.Load(), err
		}
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		first = *p
	}
	return done.Load(), failed.Load(), first
}

// idleFlows is a set of mostly idle connections from A to the built-in
// server in B, each sending a few bytes every period.
type idleFlows struct {
	conns  []net.Conn
	cancel context.CancelFunc
	wg     sync.WaitGroup
	writes atomic.Int64
}

func (l *benchLab) openIdleFlows(n int, period time.Duration) (*idleFlows, error) {
	f := &idleFlows{}
	addr := net.JoinHostPort(l.B.Addr4.String(), fmt.Sprint(port))
	err := netns.Do(l.A.NetNS, func() error {
		for range n {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				return err
			}
			f.conns = append(f.conns, c)
		}
		return nil
	})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open %d connections (%d open): %w", n, len(f.conns), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	const senders = 16
	msg := make([]byte, 64)
	for s := range senders {
		var mine []net.Conn
		for i := s; i < len(f.conns); i += senders {
			mine = append(mine, f.conns[i])
		}
		if len(mine) == 0 {
			continue
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			tick := time.NewTicker(period / time.Duration(len(mine)))
			defer tick.Stop()
			for i := 0; ; i = (i + 1) % len(mine) {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				mine[i].SetWriteDeadline(time.Now().Add(time.Second))
				if _, err := mine[i].Write(msg); err == nil {
					f.writes.Add(1)
				}
			}
		}()
	}
	return f, nil
}

func (f *idleFlows) Close() {
	if f.cancel != nil {
		f.cancel()
	}
	f.wg.Wait()
	for _, c := range f.conns {
		c.Close()
	}
}

//go:build linux

package probe

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/netlab"
	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
	"github.com/siftr-probe/siftr-probe/internal/pods/podstest"
	"github.com/siftr-probe/siftr-probe/internal/syncbuf"
	"github.com/siftr-probe/siftr-probe/internal/traffic"
)

// TestIntegrationAllNetNSPods labels namespaces with their pods from a
// fake API server: the server side of two labs is a pod each (by its
// address), the client side no pod. A pod replaced under the same address
// relabels the records that follow; pod= selects namespaces by pod.
func TestIntegrationAllNetNSPods(t *testing.T) {
	labtest.RequireRoot(t)
	api := podstest.NewFakeAPI(t)
	kubeconfig := api.Kubeconfig(api.Token)
	prefix := fmt.Sprintf("fp%d", os.Getpid()%10000)
	var labs []*netlab.Lab
	for i := range 2 {
		lab, err := netlab.New(netlab.Config{Name: fmt.Sprintf("%s%d", prefix, i+1), Subnet: uint8(201 + i)}) // addresses no other lab here has (pods are found by address)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { lab.Close() })
		labs = append(labs, lab)
		api.Put(podstest.Pod("n1", "shop", fmt.Sprintf("web-%d", i+1), lab.B.Addr4.String(), lab.B.Addr6.String()))
		var ln net.Listener
		if err := lab.B.Do(func() (err error) { ln, err = net.Listen("tcp", "[::]:5201"); return err }); err != nil {
			t.Fatal(err)
		}
		srv := traffic.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	api.Put(podstest.Pod("n2", "shop", "elsewhere", labs[0].A.Addr4.String())) // another node's pod: not ours

	// run follows the namespaces include selects (once follow of them are),
	// sends over both labs, and returns the records by namespace name;
	// between is called halfway.
	run := func(t *testing.T, include []string, follow int, between func()) map[string][]correlate.Record {
		var mu sync.Mutex
		byNS := map[string][]correlate.Record{}
		started := make(chan struct{})
		var stderr syncbuf.Buffer
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("the probe's messages:\n%s", stderr.String())
			}
		})
		p, err := New(Config{
			AllNetNS: true, NetNSInclude: include, Port: 5201, NodeName: "n1", Kubeconfig: kubeconfig,
			LogFile: filepath.Join(t.TempDir(), "fleet.log"), Stderr: &stderr, StatusEvery: time.Hour, Started: func() { close(started) },
			OnRecord: func(r *correlate.Record) {
				mu.Lock()
				defer mu.Unlock()
				byNS[r.Origin.NetNSName] = append(byNS[r.Origin.NetNSName], *r)
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			sum, err := p.Run(ctx)
			if err != nil {
				t.Error(err)
			}
			sum.Print(&stderr)
		}()
		<-started
		// send writes over a new connection of each lab and leaves it open
		// until the run ends: a socket that is still there when its
		// packets are looked up (diag mode).
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		send := func() {
			for _, lab := range labs {
				var c net.Conn
				addr := net.JoinHostPort(lab.B.Addr4.String(), "5201")
				if err := lab.A.Do(func() (err error) { c, err = net.Dial("tcp", addr); return err }); err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
				if _, err := c.Write(make([]byte, 256<<10)); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			n := 0
			for _, ns := range p.read().NetNS {
				if !ns.Ended {
					n++
				}
			}
			if n >= follow || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond)
		send()
		if between != nil {
			between()
			send()
		}
		time.Sleep(200 * time.Millisecond)
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return byNS
	}

	t.Run("labels", func(t *testing.T) {
		relabelled := time.Time{}
		byNS := run(t, []string{"netns=" + prefix + "*"}, 4, func() {
			// web-1 is replaced by web-1b at the same addresses.
			api.Remove("shop", "web-1")
			api.Put(podstest.Pod("n1", "shop", "web-1b", labs[0].B.Addr4.String(), labs[0].B.Addr6.String()))
			time.Sleep(500 * time.Millisecond) // the watch delivers; the namespace is relabelled
			relabelled = time.Now()
		})
		for i, lab := range labs {
			server := byNS[filepath.Base(lab.B.NetNS)]
			client := byNS[filepath.Base(lab.A.NetNS)]
			if len(server) == 0 || len(client) == 0 {
				t.Fatalf("lab %d: %d server records, %d client records", i+1, len(server), len(client))
			}
			for _, r := range client {
				if r.Origin.PodName != "" {
					t.Fatalf("lab %d client record labelled with pod %s/%s", i+1, r.Origin.PodNamespace, r.Origin.PodName)
				}
			}
			names := map[string]int{}
			for _, r := range server {
				o := r.Origin
				if o.PodNamespace != "shop" || o.PodUID == "" || o.Container != "main" || o.NetNS == 0 {
					t.Fatalf("lab %d server record origin %+v", i+1, *o)
				}
				names[o.PodName]++
				if i == 0 && o.PodName == "web-1" && r.Pkt.Time > relabelled.UnixNano() {
					t.Fatalf("a record after the relabelling still says web-1")
				}
			}
			want := map[int][]string{0: {"web-1", "web-1b"}, 1: {"web-2"}}[i]
			for _, n := range want {
				if names[n] == 0 {
					t.Errorf("lab %d: no server record labelled %s (labels %v)", i+1, n, names)
				}
			}
			if len(names) != len(want) {
				t.Errorf("lab %d: labels %v, want %v", i+1, names, want)
			}
		}
	})
	t.Run("select by label", func(t *testing.T) {
		byNS := run(t, []string{"label=app=web-1*"}, 1, nil) // web-1b by now
		if len(byNS) != 1 || len(byNS[filepath.Base(labs[0].B.NetNS)]) == 0 {
			t.Errorf("records from %d namespaces, want only %s", len(byNS), filepath.Base(labs[0].B.NetNS))
		}
	})
	t.Run("select", func(t *testing.T) {
		byNS := run(t, []string{"pod=shop/web-2"}, 1, nil)
		if len(byNS) != 1 || len(byNS[filepath.Base(labs[1].B.NetNS)]) == 0 {
			names := []string{}
			for n := range byNS {
				names = append(names, n)
			}
			t.Errorf("records from %v, want only %s", names, filepath.Base(labs[1].B.NetNS))
		}
	})
}

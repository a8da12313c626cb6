package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// goBenchPkgs are the pipeline stages whose Go benchmarks the suite runs.
var goBenchPkgs = []string{"./capture/", "./correlate/", "./output/", "./diag/"}

// goBench is one Go benchmark's medians over -count runs, by unit.
type goBench struct {
	pkg, name string
	units     []string
	median    map[string]float64
	n         int
}

func goBenchCommand(count int) []string {
	return append([]string{"go", "test", "-run", "^$", "-bench", ".", "-benchmem", "-count", strconv.Itoa(count)}, goBenchPkgs...)
}

func runGoBench(ctx context.Context, count int) ([]goBench, error) {
	args := goBenchCommand(count)
	logf("go benchmarks: %s", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	res := parseGoBench(out.String())
	if err != nil {
		return res, fmt.Errorf("%w: %s", err, lastLines(out.String(), 10))
	}
	return res, nil
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func parseGoBench(s string) []goBench {
	type key struct{ pkg, name string }
	vals := map[key]map[string][]float64{}
	var order []key
	units := map[key][]string{}
	pkg := ""
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "pkg:" {
			pkg = f[1][strings.LastIndex(f[1], "/")+1:]
			continue
		}
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := f[0]
		if i := strings.LastIndex(name, "-"); i > 0 {
			name = name[:i] // the GOMAXPROCS suffix
		}
		k := key{pkg, name}
		if vals[k] == nil {
			vals[k] = map[string][]float64{}
			order = append(order, k)
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			u := f[i+1]
			if vals[k][u] == nil {
				units[k] = append(units[k], u)
			}
			vals[k][u] = append(vals[k][u], v)
		}
	}
	var res []goBench
	for _, k := range order {
		g := goBench{pkg: k.pkg, name: k.name, units: units[k], median: map[string]float64{}}
		for u, v := range vals[k] {
			g.median[u] = median(v)
			g.n = max(g.n, len(v))
		}
		res = append(res, g)
	}
	return res
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Tests for README.md in this directory: the metrics table lists every
// siftr_* metric the probe serves, with its type and label names.
package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// TestMetricsTable compares the README's metrics table with the collector's
// golden exposition (internal/metrics/testdata/metrics.golden), which the
// metrics package's own test keeps in step with the code.
func TestMetricsTable(t *testing.T) {
	golden, err := os.ReadFile(filepath.Join("..", "internal", "metrics", "testdata", "metrics.golden"))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	served := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (siftr_\w+) (\w+)$`).FindAllSubmatch(golden, -1) {
		served[string(m[1])] = string(m[2])
	}
	if len(served) == 0 {
		t.Fatal("no siftr_* metric in the golden file")
	}
	// Label names from the samples; a histogram's series carry le.
	labels := map[string][]string{}
	sample := regexp.MustCompile(`(?m)^(siftr_\w+?)(_bucket|_sum|_count)?\{([^}]*)\}`)
	for _, m := range sample.FindAllSubmatch(golden, -1) {
		name := string(m[1])
		if _, ok := served[name]; !ok {
			name += string(m[2])
		}
		for _, kv := range strings.Split(string(m[3]), ",") {
			if k, _, _ := strings.Cut(kv, "="); !slices.Contains(labels[name], k) {
				labels[name] = append(labels[name], k)
			}
		}
	}
	listed := map[string]string{}
	listedLabels := map[string][]string{}
	row := regexp.MustCompile("(?m)^\\| `(siftr_\\w+)` \\| (\\w+) \\|([^|]*)\\|")
	for _, m := range row.FindAllSubmatch(readme, -1) {
		name := string(m[1])
		if _, dup := listed[name]; dup {
			t.Errorf("README.md lists %s twice", name)
		}
		listed[name] = string(m[2])
		// The labels cell: `name` (`value`, ...), ...; values are in parentheses.
		cell := regexp.MustCompile(`\([^)]*\)`).ReplaceAllString(string(m[3]), "")
		for _, l := range regexp.MustCompile("`(\\w+)`").FindAllStringSubmatch(cell, -1) {
			listedLabels[name] = append(listedLabels[name], l[1])
		}
	}
	for name, want := range labels {
		got := slices.Clone(listedLabels[name])
		sort.Strings(got)
		sort.Strings(want)
		if _, ok := listed[name]; ok && !slices.Equal(got, want) {
			t.Errorf("README.md gives %s the labels %v, the probe serves %v", name, got, want)
		}
	}
	for name, typ := range served {
		if got, ok := listed[name]; !ok {
			t.Errorf("README.md's metrics table lacks %s (%s)", name, typ)
		} else if got != typ {
			t.Errorf("README.md says %s is a %s, the probe serves a %s", name, got, typ)
		}
	}
	for name := range listed {
		if _, ok := served[name]; !ok {
			t.Errorf("README.md lists %s, which the probe does not serve", name)
		}
	}
}

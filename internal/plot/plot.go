package plot

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/siftr-probe/siftr-probe/internal/logset"
)

// Config says what to plot.
type Config struct {
	Paths   []string  // log files; "-" is Stdin
	Stdin   io.Reader // read for "-"
	FlowIDs []uint32  // only these flows (nil = all)
	Fields  []Field   // nil = DefaultFields
	Out     string    // .png, .svg or .html
	// MaxPoints bounds the points kept per flow and direction (see the
	// package documentation): 0 keeps every record; -1 picks the default
	// of the output kind (4,000 for images, 20,000 for HTML).
	MaxPoints int
	Progress  io.Writer // progress lines; nil = none
}

// Output kinds, from the file name.
const (
	KindPNG  = "png"
	KindSVG  = "svg"
	KindHTML = "html"
)

// KindOf returns the output kind of a file name, or an error naming the
// extensions known.
func KindOf(name string) (string, error) {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".png":
		return KindPNG, nil
	case ".svg":
		return KindSVG, nil
	case ".html", ".htm":
		return KindHTML, nil
	}
	return "", fmt.Errorf("cannot tell the output kind of %q: name it .png, .svg or .html", name)
}

// FlowPlot is what was drawn of one flow.
type FlowPlot struct {
	Flow     *logset.Flow
	Records  uint64
	Points   int
	BucketUS int64 // 0: every record drawn
}

// Result is what Plot drew.
type Result struct {
	Flows     []FlowPlot
	Malformed uint64
}

// Decimated returns a sentence per decimated flow, for stderr.
func (r *Result) Decimated() []string {
	var out []string
	for _, f := range r.Flows {
		if f.BucketUS > 0 {
			out = append(out, fmt.Sprintf("flowid %d: %d records drawn as %d points (min and max per %s bucket)",
				f.Flow.ID, f.Records, f.Points, bucketText(f.BucketUS)))
		}
	}
	return out
}

func bucketText(us int64) string {
	switch {
	case us >= 1e6:
		return fmt.Sprintf("%.3g s", float64(us)/1e6)
	case us >= 1e3:
		return fmt.Sprintf("%.3g ms", float64(us)/1e3)
	}
	return fmt.Sprintf("%d µs", us)
}

// Plot reads the logs and writes the plot. The file is written under a
// temporary name and renamed when complete.
func Plot(cfg Config) (*Result, error) {
	kind, err := KindOf(cfg.Out)
	if err != nil {
		return nil, err
	}
	if cfg.Fields == nil {
		cfg.Fields, _ = ParseFields(DefaultFields)
	}
	if cfg.MaxPoints < 0 {
		cfg.MaxPoints = 4000
		if kind == KindHTML {
			cfg.MaxPoints = 20000
		}
	}
	c := &collector{fields: cfg.Fields, limit: cfg.MaxPoints, vals: make([]float32, len(cfg.Fields))}
	res, err := logset.Read(logset.Config{Paths: cfg.Paths, Stdin: cfg.Stdin, FlowIDs: cfg.FlowIDs,
		Progress: cfg.Progress, ProgressPrefix: "siftr-probe plot"}, c)
	if err != nil {
		return nil, err
	}
	var series []*Series
	for _, s := range c.series {
		if s != nil {
			series = append(series, s)
		}
	}
	if len(series) == 0 {
		if len(cfg.FlowIDs) > 0 {
			return nil, errors.New("no record of the flows asked for in the input")
		}
		return nil, errors.New("no data line in the input: nothing to plot")
	}
	out := &Result{Malformed: res.Malformed}
	for _, s := range series {
		out.Flows = append(out.Flows, FlowPlot{s.Flow, s.Records[0] + s.Records[1], s.NumPoints(), s.BucketUS})
	}
	dir := filepath.Dir(cfg.Out)
	f, err := os.CreateTemp(dir, "."+filepath.Base(cfg.Out)+".*")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.Out, errors.Unwrap(err))
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	switch kind {
	case KindHTML:
		err = writeHTML(f, series, cfg.Fields, res)
	default:
		err = writeImage(f, kind, series, cfg.Fields)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", cfg.Out, err)
	}
	if err := os.Rename(tmp, cfg.Out); err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.Out, err)
	}
	os.Chmod(cfg.Out, 0o644)
	return out, nil
}

// title names a flow, its congestion control and the source of its state.
func title(s *Series) (string, string) {
	f := s.Flow
	head := fmt.Sprintf("flowid %d: %s -> %s", f.ID, f.Local, f.Remote)
	cc := "cc not logged (SIFTR text)"
	if len(f.Congs) > 0 {
		cc = "cc " + strings.Join(f.Congs, "+")
	}
	src := "state source not logged"
	if len(f.StateSources) > 0 {
		src = "state from " + strings.Join(f.StateSources, "+")
	}
	return head, cc + ", " + src
}

package plot

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/siftr-probe/siftr-probe/internal/logset"
)

// uplotVersion is the embedded uPlot's version (assets/README.md).
const uplotVersion = "1.6.32"

var (
	//go:embed assets/uPlot.iife.min.js
	uplotJS string
	//go:embed assets/uPlot.min.css
	uplotCSS string
	//go:embed assets/uPlot.LICENSE
	uplotLicense string
	//go:embed page.js
	pageJS string
	//go:embed page.css
	pageCSS string
)

// writeHTML writes one self-contained page: uPlot, the page's script and
// the data inline; nothing is fetched when it opens. The data of each flow
// is an x array (seconds since its first record), a direction array (0 in,
// 1 out) and one value array per field (null = absent), all of the same
// length, in time order.
func writeHTML(w io.Writer, series []*Series, fields []Field, res *logset.Result) error {
	var b strings.Builder
	b.WriteString("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n")
	b.WriteString("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n")
	var files []string
	for _, f := range res.Files {
		files = append(files, f.Name)
	}
	fmt.Fprintf(&b, "<title>siftr-probe plot: %s</title>\n", html.EscapeString(strings.Join(files, ", ")))
	b.WriteString("<!-- uPlot " + uplotVersion + ", https://github.com/leeoniya/uPlot\n" +
		strings.ReplaceAll(uplotLicense, "--", "- -") + "-->\n")
	b.WriteString("<style>\n" + uplotCSS + "\n" + pageCSS + "</style>\n")
	b.WriteString("<script>\n" + uplotJS + "\n</script>\n</head>\n<body>\n")
	fmt.Fprintf(&b, "<header><h1>siftr-probe plot</h1><p class=\"files\">%s &middot; %d flows &middot; made %s</p></header>\n",
		html.EscapeString(strings.Join(files, ", ")), len(series), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	b.WriteString("<noscript>This page draws its charts with JavaScript.</noscript>\n")
	b.WriteString("<div id=\"controls\"></div><div id=\"flows\"></div>\n")
	b.WriteString("<script type=\"application/json\" id=\"siftr-data\">")
	writeData(&b, series, fields)
	b.WriteString("</script>\n<script>\n" + pageJS + "\n</script>\n</body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// writeData writes the page's data as JSON (numbers formatted by hand:
// a million points would be slow through encoding/json).
func writeData(b *strings.Builder, series []*Series, fields []Field) {
	js := func(v any) string {
		out, _ := json.Marshal(v) // escapes <, > and &: safe inside <script>
		return string(out)
	}
	type fieldInfo struct {
		Name  string `json:"name"`
		Label string `json:"label"`
		Panel int    `json:"panel"`
		Color string `json:"color"`
	}
	var fi []fieldInfo
	for _, f := range fields {
		c := colorOf(f)
		fi = append(fi, fieldInfo{f.Name, f.Label, f.Panel, fmt.Sprintf("#%02x%02x%02x", c.R, c.G, c.B)})
	}
	b.WriteString(`{"fields":` + js(fi) + `,"flows":[`)
	var buf []byte
	for i, s := range series {
		if i > 0 {
			b.WriteByte(',')
		}
		head, sub := title(s)
		// Merge the two directions in time order.
		in, out := s.Points(0), s.Points(1)
		pts := make([]Point, 0, len(in)+len(out))
		dirs := make([]byte, 0, len(in)+len(out))
		for a, c := 0, 0; a < len(in) || c < len(out); {
			if c >= len(out) || (a < len(in) && in[a].X <= out[c].X) {
				pts, dirs = append(pts, in[a]), append(dirs, 0)
				a++
			} else {
				pts, dirs = append(pts, out[c]), append(dirs, 1)
				c++
			}
		}
		fmt.Fprintf(b, `{"id":%d,"title":%s,"sub":%s,"records":%d,"points":%d,"bucket_us":%d,"t0_us":%d,"x":[`,
			s.Flow.ID, js(head), js(sub), s.Records[0]+s.Records[1], len(pts), s.BucketUS, s.T0US)
		for j, p := range pts {
			buf = buf[:0]
			if j > 0 {
				buf = append(buf, ',')
			}
			buf = strconv.AppendFloat(buf, p.X, 'f', -1, 64)
			b.Write(buf)
		}
		b.WriteString(`],"d":[`)
		for j, d := range dirs {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteByte('0' + d)
		}
		b.WriteString(`],"v":[`)
		for k := range fields {
			if k > 0 {
				b.WriteByte(',')
			}
			b.WriteByte('[')
			for j, p := range pts {
				buf = buf[:0]
				if j > 0 {
					buf = append(buf, ',')
				}
				v := float64(p.V[k])
				if math.IsNaN(v) {
					buf = append(buf, "null"...)
				} else {
					buf = strconv.AppendFloat(buf, v, 'f', -1, 32)
				}
				b.Write(buf)
			}
			b.WriteByte(']')
		}
		b.WriteString("]}")
	}
	b.WriteString("]}")
}

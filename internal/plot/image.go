package plot

import (
	"fmt"
	"image/color"
	"io"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// palette gives each field a colour, by its index in Fields.
var palette = []color.RGBA{
	{0x1f, 0x77, 0xb4, 0xff}, // cwnd: blue
	{0xd6, 0x27, 0x28, 0xff}, // ssthresh: red
	{0x2c, 0xa0, 0x2c, 0xff}, // inflight: green
	{0x94, 0x67, 0xbd, 0xff}, // snd_wnd: purple
	{0x8c, 0x56, 0x4b, 0xff}, // rcv_wnd: brown
	{0xe3, 0x77, 0xc2, 0xff}, // snd_buf_cc: pink
	{0x7f, 0x7f, 0x7f, 0xff}, // rcv_buf_cc: grey
	{0x1f, 0x77, 0xb4, 0xff}, // srtt: blue
	{0xff, 0x7f, 0x0e, 0xff}, // rto: orange
	{0x17, 0xbe, 0xcf, 0xff}, // staleness: cyan
}

func colorOf(f Field) color.RGBA {
	for i, g := range Fields {
		if g.Name == f.Name {
			return palette[i]
		}
	}
	return color.RGBA{0, 0, 0, 0xff}
}

// byteUnit picks the unit of the bytes axis for values up to max.
func byteUnit(max float64) (string, float64) {
	switch {
	case max >= 10e6:
		return "MB", 1e6
	case max >= 10e3:
		return "kB", 1e3
	}
	return "bytes", 1
}

// writeImage draws one row per flow: the bytes panel on the left, the
// milliseconds panel on the right (a panel without fields is left out).
// Outbound records are lines, inbound records dots of the same colour.
func writeImage(w io.Writer, kind string, series []*Series, fields []Field) error {
	hasPanel := [2]bool{}
	for _, f := range fields {
		hasPanel[f.Panel] = true
	}
	cols := 0
	for _, h := range hasPanel {
		if h {
			cols++
		}
	}
	rows := len(series)
	width := vg.Length(cols) * 8 * vg.Inch
	height := vg.Length(rows) * 4.2 * vg.Inch
	plots := make([][]*plot.Plot, rows)
	for r, s := range series {
		head, sub := title(s)
		for panel := range 2 {
			if !hasPanel[panel] {
				continue
			}
			p, err := panelPlot(s, fields, panel)
			if err != nil {
				return err
			}
			p.Title.Text = head + "\n" + sub
			if panel == PanelTime && hasPanel[PanelBytes] {
				p.Title.Text = head + ": srtt, rto\n" + sub
			}
			plots[r] = append(plots[r], p)
		}
	}
	var c vg.CanvasWriterTo
	var dc draw.Canvas
	switch kind {
	case KindSVG:
		sc := vgsvg.New(width, height)
		c, dc = sc, draw.New(sc)
	default:
		ic := vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(96))
		c, dc = vgimg.PngCanvas{Canvas: ic}, draw.New(ic)
	}
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 6,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	for r := range plots {
		for i, p := range plots[r] {
			p.Draw(tiles.At(dc, i, r))
		}
	}
	_, err := c.WriteTo(w)
	return err
}

func panelPlot(s *Series, fields []Field, panel int) (*plot.Plot, error) {
	p := plot.New()
	p.X.Label.Text = "seconds since the flow's first record; lines: outbound records, dots: inbound"
	p.Title.TextStyle.Font.Size = vg.Points(11)
	p.Legend.Top = true
	p.Legend.XOffs = -vg.Millimeter * 2
	p.Legend.YOffs = -vg.Millimeter * 2
	p.Legend.TextStyle.Font.Size = vg.Points(9)
	p.Add(plotter.NewGrid())
	scale := 1.0
	if panel == PanelBytes {
		var mx float64
		for d := range 2 {
			for _, pt := range s.Points(d) {
				for k, f := range fields {
					if f.Panel == panel && !math.IsNaN(float64(pt.V[k])) {
						mx = math.Max(mx, float64(pt.V[k]))
					}
				}
			}
		}
		var unit string
		unit, scale = byteUnit(mx)
		p.Y.Label.Text = unit
	} else {
		p.Y.Label.Text = "milliseconds (log scale)"
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	for k, f := range fields {
		if f.Panel != panel {
			continue
		}
		col := colorOf(f)
		for d := 1; d >= 0; d-- {
			pts := s.Points(d)
			if len(pts) == 0 {
				continue
			}
			// Segments between absent values (an infinite ssthresh).
			var segs []plotter.XYs
			var cur plotter.XYs
			for _, pt := range pts {
				v := float64(pt.V[k])
				if math.IsNaN(v) || (panel == PanelTime && v <= 0) { // log scale: no zeros
					if len(cur) > 0 {
						segs = append(segs, cur)
						cur = nil
					}
					continue
				}
				cur = append(cur, plotter.XY{X: pt.X, Y: v / scale})
			}
			if len(cur) > 0 {
				segs = append(segs, cur)
			}
			name := f.Label
			for i, seg := range segs {
				if d == 1 {
					l, err := plotter.NewLine(seg)
					if err != nil {
						return nil, err
					}
					l.Color = col
					l.Width = vg.Points(1)
					p.Add(l)
					if i == 0 {
						p.Legend.Add(name, l) // one entry per field: the outbound line
					}
				} else {
					sc, err := plotter.NewScatter(seg)
					if err != nil {
						return nil, err
					}
					sc.Color = col
					sc.Shape = draw.CircleGlyph{}
					sc.Radius = vg.Points(1.2)
					p.Add(sc)
					if i == 0 && s.Records[1] == 0 {
						p.Legend.Add(name, sc)
					}
				}
			}
		}
	}
	if s.BucketUS > 0 {
		p.X.Label.Text += fmt.Sprintf("  (decimated: min and max per %s)", bucketText(s.BucketUS))
	}
	return p, nil
}

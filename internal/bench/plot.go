package bench

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// The plot is two panels in one SVG document, drawn by hand (SVG is text):
// the latency histogram, with a logarithmic latency axis, and IOPS over
// time. Every data line is a <polyline class="series"> carrying its name
// in data-name, so tests (and scripts) can find them.

const (
	plotWidth   = 860
	panelHeight = 300
	marginLeft  = 80
	marginRight = 150 // the legend
	marginTop   = 40
	marginBot   = 50
	// histBinsPerDecade is how finely the latency axis is binned: the
	// histogram's own buckets (64 per power of two) are summed into
	// these, so the bars are wide enough to read.
	histBinsPerDecade = 20
)

var plotColors = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"}

// axis maps values to pixels, linearly or on a log10 scale.
type axis struct {
	lo, hi   float64 // in values (for a log axis: the values, not their logs)
	from, to float64 // in pixels
	log      bool
}

func (a axis) pos(v float64) float64 {
	lo, hi := a.lo, a.hi
	if a.log {
		v, lo, hi = math.Log10(math.Max(v, a.lo)), math.Log10(lo), math.Log10(hi)
	}
	if hi == lo {
		return a.from
	}
	return a.from + (v-lo)/(hi-lo)*(a.to-a.from)
}

// niceStep returns a step of 1, 2 or 5 × 10^k that cuts span into about n
// parts.
func niceStep(span float64, n int) float64 {
	if span <= 0 || n <= 0 {
		return 1
	}
	raw := span / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// series is one line of a panel.
type series struct {
	name   string
	xs, ys []float64
}

// panel is one chart: its axes, lines and labels.
type panel struct {
	title, xLabel, yLabel string
	x, y                  axis
	xTicks                []tick
	yTicks                []tick
	lines                 []series
	top                   float64 // pixel y of the panel's top edge; set first
}

type tick struct {
	v     float64
	label string
}

// WriteSVG draws the run as an SVG document: the latency histogram of
// reads and writes (percent of I/Os per bin, over a logarithmic latency
// axis) and IOPS over time (the total and, with several jobs, each job).
func WriteSVG(out io.Writer, r *Result, title string) error {
	titles := wrapTitle(title, 100)
	head := float64(marginTop + 16*(len(titles)-1))
	panels := []panel{}
	if p, ok := latencyPanel(r, head); ok {
		panels = append(panels, p)
	}
	panels = append(panels, iopsPanel(r, head+float64(len(panels)*panelHeight)))
	height := int(head) + len(panels)*panelHeight
	bw := bufio.NewWriter(out)
	fmt.Fprintf(bw, `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">
<rect width="100%%" height="100%%" fill="white"/>
`, plotWidth, height, plotWidth, height)
	for i, t := range titles {
		fmt.Fprintf(bw, "<text x=\"%d\" y=\"%d\" font-size=\"14\" font-weight=\"bold\">%s</text>\n", marginLeft/4, 22+16*i, xmlEscape(t))
	}
	for i := range panels {
		panels[i].draw(bw)
	}
	fmt.Fprintln(bw, "</svg>")
	return bw.Flush()
}

// plotArea returns the panel's drawing rectangle in pixels.
func (p *panel) plotArea() (left, right, top, bottom float64) {
	return marginLeft, plotWidth - marginRight, p.top + 30, p.top + panelHeight - marginBot
}

func (p *panel) draw(w io.Writer) {
	left, right, top, bottom := p.plotArea()
	fmt.Fprintf(w, "<g class=\"panel\">\n<text x=\"%g\" y=\"%g\" font-weight=\"bold\">%s</text>\n", left, p.top+18, xmlEscape(p.title))
	fmt.Fprintf(w, "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"#888\"/>\n", left, top, right-left, bottom-top)
	for _, t := range p.xTicks {
		x := p.x.pos(t.v)
		fmt.Fprintf(w, "<line x1=\"%.1f\" y1=\"%g\" x2=\"%.1f\" y2=\"%g\" stroke=\"#ddd\"/>\n", x, top, x, bottom)
		fmt.Fprintf(w, "<text x=\"%.1f\" y=\"%g\" text-anchor=\"middle\">%s</text>\n", x, bottom+16, xmlEscape(t.label))
	}
	for _, t := range p.yTicks {
		y := p.y.pos(t.v)
		fmt.Fprintf(w, "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", left, y, right, y)
		fmt.Fprintf(w, "<text x=\"%g\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", left-6, y+4, xmlEscape(t.label))
	}
	fmt.Fprintf(w, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%s</text>\n", (left+right)/2, bottom+36, xmlEscape(p.xLabel))
	cy := (top + bottom) / 2
	fmt.Fprintf(w, "<text x=\"18\" y=\"%g\" text-anchor=\"middle\" transform=\"rotate(-90 18 %g)\">%s</text>\n", cy, cy, xmlEscape(p.yLabel))
	for i, s := range p.lines {
		color := plotColors[i%len(plotColors)]
		var pts strings.Builder
		for k := range s.xs {
			if k > 0 {
				pts.WriteByte(' ')
			}
			fmt.Fprintf(&pts, "%.2f,%.2f", p.x.pos(s.xs[k]), p.y.pos(s.ys[k]))
		}
		fmt.Fprintf(w, "<polyline class=\"series\" data-name=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"%s\"/>\n",
			xmlEscape(s.name), color, pts.String())
		ly := top + 10 + float64(i)*18
		fmt.Fprintf(w, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"%s\" stroke-width=\"3\"/>\n", right+10, ly, right+30, ly, color)
		fmt.Fprintf(w, "<text x=\"%g\" y=\"%g\">%s</text>\n", right+36, ly+4, xmlEscape(s.name))
	}
	fmt.Fprintln(w, "</g>")
}

// latencyPanel is the histogram of the total's reads and writes, as the
// percentage of that direction's I/Os in each bin of a log latency axis,
// drawn as steps. It is absent when the run took no latencies.
func latencyPanel(r *Result, top float64) (panel, bool) {
	t := &r.Total
	var hs []struct {
		name string
		h    *Histogram
	}
	lo, hi := uint64(math.MaxUint64), uint64(0)
	for _, d := range []struct {
		name string
		h    *Histogram
	}{{"read", &t.Read.Lat}, {"write", &t.Write.Lat}} {
		if d.h.Count() == 0 {
			continue
		}
		hs = append(hs, d)
		lo, hi = min(lo, d.h.Min()), max(hi, d.h.Max())
	}
	if len(hs) == 0 {
		return panel{}, false
	}
	// Whole decades around the data.
	dlo := math.Floor(math.Log10(math.Max(float64(lo), 1)))
	dhi := math.Ceil(math.Log10(math.Max(float64(hi), 1)))
	if dhi <= dlo {
		dhi = dlo + 1
	}
	p := panel{
		title:  "latency histogram",
		xLabel: "latency (log scale)",
		yLabel: "% of I/Os per bin",
		top:    top,
	}
	left, right, top, bottom := p.plotArea()
	p.x = axis{lo: math.Pow(10, dlo), hi: math.Pow(10, dhi), from: left, to: right, log: true}
	for d := dlo; d <= dhi; d++ {
		p.xTicks = append(p.xTicks, tick{math.Pow(10, d), fmtNS(math.Pow(10, d))})
	}
	nbins := int(dhi-dlo) * histBinsPerDecade
	ymax := 0.0
	for _, d := range hs {
		bins := make([]float64, nbins)
		for i, c := range d.h.counts {
			if c == 0 {
				continue
			}
			blo, bhi := histBounds(i)
			mid := (float64(blo) + float64(bhi)) / 2
			b := int((math.Log10(math.Max(mid, 1)) - dlo) * histBinsPerDecade)
			bins[min(max(b, 0), nbins-1)] += float64(c)
		}
		s := series{name: d.name}
		for b, c := range bins {
			pct := 100 * c / float64(d.h.Count())
			ymax = math.Max(ymax, pct)
			x0 := math.Pow(10, dlo+float64(b)/histBinsPerDecade)
			x1 := math.Pow(10, dlo+float64(b+1)/histBinsPerDecade)
			s.xs = append(s.xs, x0, x1)
			s.ys = append(s.ys, pct, pct)
		}
		p.lines = append(p.lines, s)
	}
	p.y, p.yTicks = linearAxis(ymax, bottom, top, func(v float64) string { return fmt.Sprintf("%.4g%%", v) })
	return p, true
}

// iopsPanel is IOPS per timeline interval: the total, and each job when
// there are several.
func iopsPanel(r *Result, top float64) panel {
	p := panel{title: "IOPS over time", xLabel: "time since the end of the ramp (s)", top: top}
	left, right, top, bottom := p.plotArea()
	add := func(name string, tl *Timeline, window time.Duration) {
		rates := tl.Rates(window)
		iv := tl.Interval().Seconds()
		s := series{name: name}
		for i, v := range rates {
			// A point at the middle of its interval.
			s.xs = append(s.xs, (float64(i)+0.5)*iv)
			s.ys = append(s.ys, v)
		}
		p.lines = append(p.lines, s)
	}
	add("total", &r.Total.Timeline, r.Total.Runtime)
	if len(r.Jobs) > 1 {
		for _, j := range r.Jobs {
			add(j.Name, &j.Timeline, j.Runtime)
		}
	}
	p.yLabel = fmt.Sprintf("IOPS (per %v)", r.Total.Timeline.Interval())
	xmax, ymax := 0.0, 0.0
	for _, s := range p.lines {
		for k := range s.xs {
			xmax, ymax = math.Max(xmax, s.xs[k]), math.Max(ymax, s.ys[k])
		}
	}
	xmax = math.Max(xmax, r.Total.Runtime.Seconds())
	p.x, p.xTicks = linearAxis(xmax, left, right, func(v float64) string { return fmt.Sprintf("%.4g", v) })
	p.y, p.yTicks = linearAxis(ymax, bottom, top, fmtCount)
	return p
}

// linearAxis returns an axis from 0 to max (rounded up to a tick) mapped
// onto [from, to] pixels, and its ticks.
func linearAxis(vmax, from, to float64, label func(float64) string) (axis, []tick) {
	if vmax <= 0 {
		vmax = 1
	}
	step := niceStep(vmax, 5)
	top := math.Ceil(vmax/step-1e-9) * step
	a := axis{lo: 0, hi: top, from: from, to: to}
	var ticks []tick
	for k := 0; float64(k)*step <= top+step/2; k++ {
		v := float64(k) * step
		ticks = append(ticks, tick{v, label(v)})
	}
	return a, ticks
}

// wrapTitle cuts a title into lines of at most about width characters,
// after commas.
func wrapTitle(title string, width int) []string {
	var lines []string
	line := ""
	for _, part := range strings.SplitAfter(title, ", ") {
		if line != "" && len(line)+len(part) > width {
			lines = append(lines, strings.TrimSpace(line))
			line = ""
		}
		line += part
	}
	return append(lines, strings.TrimSpace(line))
}

// fmtNS labels a latency in nanoseconds with a unit.
func fmtNS(ns float64) string {
	switch {
	case ns >= 1e9:
		return fmt.Sprintf("%g s", ns/1e9)
	case ns >= 1e6:
		return fmt.Sprintf("%g ms", ns/1e6)
	case ns >= 1e3:
		return fmt.Sprintf("%g µs", ns/1e3)
	}
	return fmt.Sprintf("%g ns", ns)
}

// fmtCount labels a count: 1500 → 1.5k.
func fmtCount(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.4gM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.4gk", v/1e3)
	}
	return fmt.Sprintf("%.4g", v)
}

func xmlEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '&':
			b.WriteString("&amp;")
		case '"':
			b.WriteString("&quot;")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

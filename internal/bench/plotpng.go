package bench

import (
	"bufio"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"strconv"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// WritePNG draws the same panels as WriteSVG into a PNG image: axes, grid,
// tick labels, the series and their legend, with a fixed bitmap font
// (golang.org/x/image's basicfont, 7x13). The y axis label is written
// above the axis rather than turned.
func WritePNG(out io.Writer, r *Result, title string) error {
	titles := wrapTitle(title, 100)
	head := float64(marginTop + 16*(len(titles)-1))
	panels := []panel{}
	if p, ok := latencyPanel(r, head); ok {
		panels = append(panels, p)
	}
	panels = append(panels, iopsPanel(r, head+float64(len(panels)*panelHeight)))
	height := int(head) + len(panels)*panelHeight
	img := image.NewRGBA(image.Rect(0, 0, plotWidth, height))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	c := canvas{img}
	for i, t := range titles {
		c.text(marginLeft/4, 22+16*i, t, color.Black, alignLeft)
	}
	for i := range panels {
		c.panel(&panels[i])
	}
	bw := bufio.NewWriter(out)
	if err := png.Encode(bw, img); err != nil {
		return err
	}
	return bw.Flush()
}

// canvas draws lines and text on an RGBA image.
type canvas struct{ img *image.RGBA }

var (
	frameGray = color.RGBA{0x88, 0x88, 0x88, 0xff}
	gridGray  = color.RGBA{0xdd, 0xdd, 0xdd, 0xff}
)

type align int

const (
	alignLeft align = iota
	alignCenter
	alignRight
)

func (c canvas) panel(p *panel) {
	left, right, top, bottom := p.plotArea()
	for _, t := range p.xTicks {
		x := p.x.pos(t.v)
		c.line(x, top, x, bottom, gridGray, 1)
		c.text(int(x), int(bottom)+16, t.label, color.Black, alignCenter)
	}
	for _, t := range p.yTicks {
		y := p.y.pos(t.v)
		c.line(left, y, right, y, gridGray, 1)
		c.text(int(left)-6, int(y)+4, t.label, color.Black, alignRight)
	}
	c.rect(left, top, right, bottom, frameGray)
	w := c.text(int(left), int(p.top)+18, p.title, color.Black, alignLeft)
	c.text(int(left+right)/2, int(bottom)+36, p.xLabel, color.Black, alignCenter)
	c.text(int(left)+w+24, int(p.top)+18, "("+p.yLabel+")", frameGray, alignLeft)
	for i, s := range p.lines {
		col := hexColor(plotColors[i%len(plotColors)])
		for k := 1; k < len(s.xs); k++ {
			c.line(p.x.pos(s.xs[k-1]), p.y.pos(s.ys[k-1]), p.x.pos(s.xs[k]), p.y.pos(s.ys[k]), col, 2)
		}
		ly := top + 10 + float64(i)*18
		c.line(right+10, ly, right+30, ly, col, 3)
		c.text(int(right)+36, int(ly)+4, s.name, color.Black, alignLeft)
	}
}

func (c canvas) rect(x0, y0, x1, y1 float64, col color.Color) {
	c.line(x0, y0, x1, y0, col, 1)
	c.line(x1, y0, x1, y1, col, 1)
	c.line(x1, y1, x0, y1, col, 1)
	c.line(x0, y1, x0, y0, col, 1)
}

// line draws a segment width pixels thick by stepping along its longer
// extent, one square dot per step.
func (c canvas) line(x0, y0, x1, y1 float64, col color.Color, width int) {
	steps := int(math.Ceil(math.Max(math.Abs(x1-x0), math.Abs(y1-y0))))
	steps = max(steps, 1)
	for i := 0; i <= steps; i++ {
		f := float64(i) / float64(steps)
		x := int(math.Round(x0 + f*(x1-x0)))
		y := int(math.Round(y0 + f*(y1-y0)))
		for dx := 0; dx < width; dx++ {
			for dy := 0; dy < width; dy++ {
				c.img.Set(x+dx-width/2, y+dy-width/2, col)
			}
		}
	}
}

// text writes s with its baseline at y, aligned at x as asked, and
// returns its width. The bitmap font has ASCII only: µ becomes u.
func (c canvas) text(x, y int, s string, col color.Color, a align) int {
	s = strings.ReplaceAll(s, "µ", "u")
	d := font.Drawer{Dst: c.img, Src: image.NewUniform(col), Face: basicfont.Face7x13}
	w := d.MeasureString(s).Round()
	switch a {
	case alignCenter:
		x -= w / 2
	case alignRight:
		x -= w
	}
	d.Dot = fixed.P(x, y)
	d.DrawString(s)
	return w
}

// hexColor parses "#rrggbb"; anything else is black.
func hexColor(s string) color.RGBA {
	if len(s) != 7 || s[0] != '#' {
		return color.RGBA{A: 0xff}
	}
	v, err := strconv.ParseUint(s[1:], 16, 32)
	if err != nil {
		return color.RGBA{A: 0xff}
	}
	return color.RGBA{uint8(v >> 16), uint8(v >> 8), uint8(v), 0xff}
}

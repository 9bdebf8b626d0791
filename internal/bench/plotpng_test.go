package bench

import (
	"bytes"
	"image/color"
	"image/png"
	"testing"
)

// TestWritePNG decodes the PNG and checks what was drawn where: a white
// page of the SVG's size, the panels' frames, each series' color inside
// its panel's plot area, and text (black pixels) in the title band.
func TestWritePNG(t *testing.T) {
	r := plotResult()
	var buf bytes.Buffer
	if err := WritePNG(&buf, r, "umdbench: randread µs"); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	b := img.Bounds()
	if b.Dx() != plotWidth || b.Dy() != marginTop+2*panelHeight {
		t.Fatalf("image %v, want %dx%d", b, plotWidth, marginTop+2*panelHeight)
	}
	rgba := func(x, y int) color.RGBA {
		r, g, b, a := img.At(x, y).RGBA()
		return color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8), uint8(a >> 8)}
	}
	if c := rgba(1, 1); c != (color.RGBA{255, 255, 255, 255}) {
		t.Errorf("corner %v, want white", c)
	}
	count := func(x0, y0, x1, y1 int, want color.RGBA) int {
		n := 0
		for y := y0; y < y1; y++ {
			for x := x0; x < x1; x++ {
				if rgba(x, y) == want {
					n++
				}
			}
		}
		return n
	}
	if n := count(0, 0, plotWidth, marginTop-10, color.RGBA{0, 0, 0, 255}); n < 50 {
		t.Errorf("%d black pixels in the title band: no title", n)
	}
	for i, top := range []float64{marginTop, marginTop + panelHeight} {
		p := panel{top: top}
		left, right, ptop, bottom := p.plotArea()
		if c := rgba(int(left), int(ptop)+5); c != frameGray {
			t.Errorf("panel %d: frame at (%d,%d) is %v", i, int(left), int(ptop)+5, c)
		}
		blue := hexColor(plotColors[0])
		if n := count(int(left)+1, int(ptop)+1, int(right), int(bottom), blue); n < 20 {
			t.Errorf("panel %d: %d pixels of the first series' color inside the plot area", i, n)
		}
	}
	// The IOPS panel has the total and the two jobs: their colors too.
	p := panel{top: marginTop + panelHeight}
	left, right, ptop, bottom := p.plotArea()
	for k := 1; k < 3; k++ {
		if n := count(int(left)+1, int(ptop)+1, int(right), int(bottom), hexColor(plotColors[k])); n < 20 {
			t.Errorf("IOPS panel: %d pixels of series %d's color", n, k)
		}
	}
}

func TestHexColor(t *testing.T) {
	if c := hexColor("#1f77b4"); c != (color.RGBA{0x1f, 0x77, 0xb4, 0xff}) {
		t.Errorf("%v", c)
	}
	if c := hexColor("blue"); c != (color.RGBA{A: 0xff}) {
		t.Errorf("%v", c)
	}
}

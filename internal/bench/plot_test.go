package bench

import (
	"bytes"
	"encoding/xml"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// svgDoc is the part of the plot the tests read back.
type svgDoc struct {
	XMLName xml.Name `xml:"svg"`
	Panels  []struct {
		Texts []string `xml:"text"`
		Lines []struct {
			Class  string `xml:"class,attr"`
			Name   string `xml:"data-name,attr"`
			Points string `xml:"points,attr"`
		} `xml:"polyline"`
	} `xml:"g"`
}

type point struct{ x, y float64 }

func parsePoints(t *testing.T, s string) []point {
	t.Helper()
	var pts []point
	for _, f := range strings.Fields(s) {
		xs, ys, ok := strings.Cut(f, ",")
		x, err1 := strconv.ParseFloat(xs, 64)
		y, err2 := strconv.ParseFloat(ys, 64)
		if !ok || err1 != nil || err2 != nil {
			t.Fatalf("bad point %q", f)
		}
		pts = append(pts, point{x, y})
	}
	return pts
}

// plotResult is a two-job run: job a's reads all take 3 µs, job b's
// 30 µs, 100 reads each; each completes 10 I/Os per 100 ms for a second
// on its timeline, except job a's fourth interval, which has 5.
func plotResult() *Result {
	r := &Result{Workload: Workload{RW: RandRead, BlockSize: 4096, IODepth: 1}}
	for k, lat := range []uint64{3000, 30000} {
		j := &JobResult{Name: []string{"a", "b"}[k], Runtime: time.Second}
		for i := 0; i < 10; i++ {
			n := 10
			if k == 0 && i == 3 {
				n = 5
			}
			for c := 0; c < n; c++ {
				j.Timeline.Record(int64(i)*int64(100*time.Millisecond) + int64(c))
			}
			for c := 0; c < 10; c++ {
				j.Read.Lat.Record(lat)
				j.Read.IOs++
			}
		}
		r.Jobs = append(r.Jobs, j)
	}
	r.Total = Merge("total", r.Jobs)
	return r
}

func TestWriteSVG(t *testing.T) {
	r := plotResult()
	var buf bytes.Buffer
	if err := WriteSVG(&buf, r, `umdbench: <randread> & "more"`); err != nil {
		t.Fatal(err)
	}
	var doc svgDoc
	if err := xml.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("the SVG is not XML: %v\n%s", err, buf.String())
	}
	if len(doc.Panels) != 2 {
		t.Fatalf("%d panels, want 2 (latency, IOPS)", len(doc.Panels))
	}
	lat, iops := doc.Panels[0], doc.Panels[1]
	if len(lat.Lines) != 1 || lat.Lines[0].Name != "read" {
		t.Errorf("latency series %+v, want one: read", lat.Lines)
	}
	var names []string
	for _, l := range iops.Lines {
		if l.Class != "series" {
			t.Errorf("polyline of class %q", l.Class)
		}
		names = append(names, l.Name)
	}
	if strings.Join(names, ",") != "total,a,b" {
		t.Errorf("IOPS series %v, want total, a, b", names)
	}

	left, right := float64(marginLeft), float64(plotWidth-marginRight)
	top, bottom := float64(marginTop+30), float64(marginTop+panelHeight-marginBot)

	// Latency: 3 µs to 30 µs spans the decades 1 µs to 100 µs; half the
	// reads in each of two bins, so both peaks are at the top (50 %),
	// at their place on the log axis.
	logX := func(ns float64) float64 { return left + (math.Log10(ns)-3)/2*(right-left) }
	var peaks []float64
	for _, p := range parsePoints(t, lat.Lines[0].Points) {
		if math.Abs(p.y-top) < 0.01 {
			peaks = append(peaks, p.x)
		} else if math.Abs(p.y-bottom) > 0.01 {
			t.Errorf("histogram point %v neither at 0 %% nor at the peak", p)
		}
	}
	for _, want := range []float64{3000, 30000} {
		found := false
		for _, x := range peaks {
			// A bin is a twentieth of a decade wide.
			if x >= logX(want/1.13) && x <= logX(want*1.13) {
				found = true
			}
		}
		if !found {
			t.Errorf("no peak near %v ns (x %.1f); peaks at %v", want, logX(want), peaks)
		}
	}
	for _, label := range []string{"1 µs", "10 µs", "100 µs"} {
		if !slices.Contains(lat.Texts, label) {
			t.Errorf("latency axis has no %q label: %q", label, lat.Texts)
		}
	}

	// IOPS: the total is 200 per 100 ms (2000 IOPS) except 150 in the
	// fourth interval; the axis tops at 2000. This panel is the second.
	top, bottom = top+panelHeight, bottom+panelHeight
	pts := parsePoints(t, iops.Lines[0].Points)
	if len(pts) != 10 {
		t.Fatalf("%d total points, want 10", len(pts))
	}
	for i, p := range pts {
		want := top
		if i == 3 {
			want = bottom - 0.75*(bottom-top)
		}
		if math.Abs(p.y-want) > 0.01 {
			t.Errorf("total point %d at y %.2f, want %.2f", i, p.y, want)
		}
		if wx := left + (float64(i)+0.5)/10*(right-left); math.Abs(p.x-wx) > 0.01 {
			t.Errorf("total point %d at x %.2f, want %.2f", i, p.x, wx)
		}
	}
}

func TestWriteSVGNoLatency(t *testing.T) {
	r := plotResult()
	r.Total.Read.Lat.Reset()
	var buf bytes.Buffer
	if err := WriteSVG(&buf, r, "no latency"); err != nil {
		t.Fatal(err)
	}
	var doc svgDoc
	if err := xml.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Panels) != 1 || len(doc.Panels[0].Lines) != 3 {
		t.Fatalf("%d panels, want only the IOPS one", len(doc.Panels))
	}
}

//go:build guest

package nvmelike_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/umdkit/umd"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/qemu/guest"
)

// sglGuestDevices opens, one after the other, the controllers bound to
// vfio-pci that have a namespace of an LBA size not seen on an earlier
// one, and calls f with each and one NSID per new LBA size.
func sglGuestDevices(ctx context.Context, t *testing.T, o nvmelike.Options, f func(t *testing.T, dev *umd.Device, nsids map[int]uint32)) {
	t.Helper()
	seen := map[int]bool{}
	for _, bdf := range guest.DriverFunctions(t, "vfio-pci") {
		dev, err := umd.Open(ctx, bdf, &umd.Options{PoolSize: 16 << 20, Controller: o})
		if err != nil {
			t.Fatal(err)
		}
		nsids := map[int]uint32{}
		for _, nsid := range dev.Controller().Namespaces() {
			ns, err := dev.Controller().IdentifyNamespace(ctx, nsid)
			if err != nil {
				dev.Close()
				t.Fatal(err)
			}
			if !seen[ns.LBASize] {
				seen[ns.LBASize] = true
				nsids[ns.LBASize] = nsid
			}
		}
		if len(nsids) > 0 {
			t.Run(bdf, func(t *testing.T) { f(t, dev, nsids) })
		}
		if err := dev.Close(); err != nil {
			t.Errorf("closing %s: %v", bdf, err)
		}
	}
	if len(seen) == 0 {
		t.Fatalf("topology %s: no namespaces on functions bound to vfio-pci", guest.Topology())
	}
	if guest.Topology() == "cards" && (!seen[512] || !seen[4096]) {
		t.Errorf("cards: LBA sizes %v, want 512 and 4096", seen)
	}
}

// setDataPointer switches q's data pointer, failing t if it cannot.
func setDataPointer(t *testing.T, q *umd.QueuePair, d nvmelike.DataPointer) {
	t.Helper()
	if err := q.SetDataPointer(d); err != nil {
		t.Fatal(err)
	}
}

// TestSGLGuest moves data through SGLs on QEMU's nvme (7.2 reports SGLS
// 0x00000001: SGLs with byte-aligned Data Blocks): odd-offset buffers as
// one Data Block, a 3-buffer scatter list as a Last Segment, and an
// odd-offset transfer above MDTS split into SGL parts; each is compared
// with the same data moved through PRPs.
func TestSGLGuest(t *testing.T) {
	guest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sglGuestDevices(ctx, t, nvmelike.Options{DataPointer: nvmelike.DataPointerSGL}, func(t *testing.T, dev *umd.Device, nsids map[int]uint32) {
		testSGLGuest(ctx, t, dev, nsids)
	})
}

func testSGLGuest(ctx context.Context, t *testing.T, dev *umd.Device, nsids map[int]uint32) {
	id := dev.Controller().IdentifyController()
	if ok, dword := id.SGLSupported(); !ok || dword {
		t.Fatalf("SGLS 0x%08x: QEMU 7.2's nvme reports byte-aligned SGLs (0x00000001)", id.SGLS)
	}
	q, err := dev.CreateQueuePair(ctx, umd.QueueOptions{Depth: 32})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.DataPointer() != nvmelike.DataPointerSGL {
		t.Fatalf("data pointer %v, want SGL", q.DataPointer())
	}
	max := dev.Controller().MaxTransfer()
	src, err := dev.Alloc(max + 3*4096)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Free(src)
	dst, err := dev.Alloc(max + 3*4096)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Free(dst)
	exec := func(t *testing.T, what string, c nvmelike.Command) {
		t.Helper()
		if _, err := q.Exec(ctx, &c); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	for lba, nsid := range nsids {
		// One buffer at odd offsets: written through an SGL, read back
		// through PRPs into an aligned buffer and through an SGL into
		// another odd offset.
		for _, n := range []int{lba, 3 * lba, 64 << 10, max + lba} {
			for _, off := range []int{1, 3, 4095} {
				t.Run(fmt.Sprintf("lba%d/%dB/offset%d", lba, n, off), func(t *testing.T) {
					data := src.Slice(off, n)
					for i := range data.Bytes {
						data.Bytes[i] = byte(i*13+off) ^ byte(i>>9)
					}
					blocks := uint32(n / lba)
					setDataPointer(t, q, nvmelike.DataPointerSGL)
					exec(t, "SGL write", nvmelike.WriteCommand(nsid, 8, blocks, data))
					setDataPointer(t, q, nvmelike.DataPointerPRP)
					back := dst.Slice(0, n)
					clear(back.Bytes)
					exec(t, "PRP read", nvmelike.ReadCommand(nsid, 8, blocks, back))
					if !bytes.Equal(back.Bytes, data.Bytes) {
						t.Fatal("PRP read of an SGL write differs")
					}
					setDataPointer(t, q, nvmelike.DataPointerSGL)
					back = dst.Slice(off+2, n)
					clear(back.Bytes)
					exec(t, "SGL read", nvmelike.ReadCommand(nsid, 8, blocks, back))
					if !bytes.Equal(back.Bytes, data.Bytes) {
						t.Fatal("SGL read differs")
					}
				})
			}
		}
		// Three buffers of odd sizes at odd offsets, gathered for a
		// write and scattered (differently) for a read, against the PRP
		// path's contiguous copy.
		t.Run(fmt.Sprintf("lba%d/scatter", lba), func(t *testing.T) {
			total := 4 * lba
			sizes := []int{100, 1001, total - 1101}
			gather := make([]nvmelike.Buffer, 3)
			at := 0
			for i, s := range sizes {
				gather[i] = src.Slice(at+2*i+1, s)
				for j := range gather[i].Bytes {
					gather[i].Bytes[j] = byte(i*71 + j*5 + j>>8)
				}
				at += s + 4096
			}
			want := concat(gather)
			setDataPointer(t, q, nvmelike.DataPointerSGL)
			exec(t, "SGL gathered write", nvmelike.Command{Opcode: nvmelike.CmdWrite, NSID: nsid, CDW10: 100, CDW12: 4 - 1, Buffers: gather})
			setDataPointer(t, q, nvmelike.DataPointerPRP)
			one := dst.Slice(0, total)
			clear(one.Bytes)
			exec(t, "PRP read", nvmelike.ReadCommand(nsid, 100, 4, one))
			if !bytes.Equal(one.Bytes, want) {
				t.Fatal("PRP read of a gathered SGL write differs")
			}
			setDataPointer(t, q, nvmelike.DataPointerSGL)
			scatter := []nvmelike.Buffer{dst.Slice(8192+3, 7), dst.Slice(16384+5, total-7-lba), dst.Slice(32768+1, lba)}
			for _, b := range scatter {
				clear(b.Bytes)
			}
			exec(t, "SGL scattered read", nvmelike.Command{Opcode: nvmelike.CmdRead, NSID: nsid, CDW10: 100, CDW12: 4 - 1, Buffers: scatter})
			if !bytes.Equal(concat(scatter), want) {
				t.Fatal("scattered SGL read differs")
			}
			// PRPs take several buffers too when they meet at a page
			// boundary.
			setDataPointer(t, q, nvmelike.DataPointerPRP)
			pages := []nvmelike.Buffer{dst.Slice(65536-lba, lba), dst.Slice(81920, total-lba)}
			exec(t, "PRP scattered read", nvmelike.Command{Opcode: nvmelike.CmdRead, NSID: nsid, CDW10: 100, CDW12: 4 - 1, Buffers: pages})
			if !bytes.Equal(concat(pages), want) {
				t.Fatal("scattered PRP read differs")
			}
		})
	}
	if q.Outstanding() != 0 {
		t.Errorf("%d commands outstanding", q.Outstanding())
	}
}

//go:build !guest

// This test needs gcc and the kernel's UAPI headers, which the development
// host has and the QEMU guest does not; it is left out of guest builds.

package dmabuf

import (
	"bufio"
	"bytes"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

type cStruct struct {
	c      string
	goType reflect.Type
	size   uintptr
	fields [][2]string // C name, Go name
}

var abiStructs = []cStruct{
	{"dma_buf_sync", reflect.TypeFor[dmaBufSync](), sizeofDmaBufSync,
		[][2]string{{"flags", "Flags"}}},
	{"dma_buf_export_sync_file", reflect.TypeFor[dmaBufExportSyncFile](), sizeofDmaBufExportSyncFile,
		[][2]string{{"flags", "Flags"}, {"fd", "Fd"}}},
	{"udmabuf_create", reflect.TypeFor[udmabufCreate](), sizeofUdmabufCreate,
		[][2]string{{"memfd", "Memfd"}, {"flags", "Flags"}, {"offset", "Offset"}, {"size", "Size"}}},
	{"dma_heap_allocation_data", reflect.TypeFor[dmaHeapAllocationData](), sizeofDmaHeapAllocation,
		[][2]string{{"len", "Len"}, {"fd", "Fd"}, {"fd_flags", "FdFlags"}, {"heap_flags", "HeapFlags"}}},
	{"umd_dmabuf_export", reflect.TypeFor[umdDmabufExport](), sizeofUmdDmabufExport,
		[][2]string{{"memfd", "Memfd"}, {"flags", "Flags"}, {"offset", "Offset"}, {"size", "Size"}, {"fd", "Fd"}, {"reserved", "Reserved"}}},
	{"umd_dmabuf_inspect", reflect.TypeFor[umdDmabufInspect](), sizeofUmdDmabufInspect,
		[][2]string{{"fd", "Fd"}, {"flags", "Flags"}, {"pfns", "Pfns"}, {"max_pfns", "MaxPfns"},
			{"size", "Size"}, {"nr_pfns", "NrPfns"}, {"sg_bytes", "SgBytes"}, {"dma_bytes", "DmaBytes"},
			{"checksum", "Checksum"}, {"sg_nents", "SgNents"}, {"dma_nents", "DmaNents"},
			{"exporter", "Exporter"}, {"attached", "Attached"}, {"mapped", "Mapped"}, {"reserved", "Reserved"}}},
}

var abiConsts = map[string]uint64{
	"DMA_BUF_SYNC_READ":              DMA_BUF_SYNC_READ,
	"DMA_BUF_SYNC_WRITE":             DMA_BUF_SYNC_WRITE,
	"DMA_BUF_SYNC_RW":                DMA_BUF_SYNC_RW,
	"DMA_BUF_SYNC_START":             DMA_BUF_SYNC_START,
	"DMA_BUF_SYNC_END":               DMA_BUF_SYNC_END,
	"DMA_BUF_BASE":                   DMA_BUF_BASE,
	"DMA_BUF_IOCTL_SYNC":             DMA_BUF_IOCTL_SYNC,
	"DMA_BUF_IOCTL_EXPORT_SYNC_FILE": DMA_BUF_IOCTL_EXPORT_SYNC_FILE,
	"UDMABUF_FLAGS_CLOEXEC":          UDMABUF_FLAGS_CLOEXEC,
	"UDMABUF_CREATE":                 UDMABUF_CREATE,
	"DMA_HEAP_IOCTL_ALLOC":           DMA_HEAP_IOCTL_ALLOC,
	"UMD_DMABUF_FLAG_CLOEXEC":        UMD_DMABUF_FLAG_CLOEXEC,
	"UMD_DMABUF_FLAG_RDWR":           UMD_DMABUF_FLAG_RDWR,
	"UMD_DMABUF_FLAGS_ALL":           UMD_DMABUF_FLAGS_ALL,
	"UMD_DMABUF_IOCTL_EXPORT":        UMD_DMABUF_IOCTL_EXPORT,
	"UMD_DMABUF_INSPECT_FLAG_WRITE":  UMD_DMABUF_INSPECT_FLAG_WRITE,
	"UMD_DMABUF_INSPECT_OWN":         UMD_DMABUF_INSPECT_OWN,
	"UMD_DMABUF_IOCTL_INSPECT":       UMD_DMABUF_IOCTL_INSPECT,
}

func cProgram() string {
	var b strings.Builder
	b.WriteString("#include <stddef.h>\n#include <stdio.h>\n#include <linux/dma-buf.h>\n#include <linux/udmabuf.h>\n#include <linux/dma-heap.h>\n#include \"umd_dmabuf.h\"\n\n")
	b.WriteString("#define P(key, v) printf(\"%s %llu\\n\", key, (unsigned long long)(v))\n\nint main(void) {\n")
	for _, s := range abiStructs {
		fmt.Fprintf(&b, "\tP(\"sizeof %s\", sizeof(struct %s));\n", s.c, s.c)
		for _, f := range s.fields {
			fmt.Fprintf(&b, "\tP(\"offsetof %s.%s\", offsetof(struct %s, %s));\n", s.c, f[0], s.c, f[0])
			fmt.Fprintf(&b, "\tP(\"sizeof %s.%s\", sizeof(((struct %s *)0)->%s));\n", s.c, f[0], s.c, f[0])
		}
	}
	for _, name := range slices.Sorted(maps.Keys(abiConsts)) {
		fmt.Fprintf(&b, "\tP(%q, %s);\n", name, name)
	}
	b.WriteString("\treturn 0;\n}\n")
	return b.String()
}

// cValues compiles and runs cProgram; it fails (never skips) without gcc
// or the headers.
func cValues(t *testing.T) map[string]uint64 {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Fatalf("this test compiles a C program against <linux/dma-buf.h> and needs gcc: install it with `apt-get install gcc` (%v)", err)
	}
	for _, h := range []string{"/usr/include/linux/dma-buf.h", "/usr/include/linux/udmabuf.h", "/usr/include/linux/dma-heap.h"} {
		if _, err := os.Stat(h); err != nil {
			t.Fatalf("this test needs the kernel UAPI header %s: install it with `apt-get install linux-libc-dev` (%v)", h, err)
		}
	}
	kmod, err := filepath.Abs("../kmod/umd_dmabuf")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src, bin := filepath.Join(dir, "abi.c"), filepath.Join(dir, "abi")
	if err := os.WriteFile(src, []byte(cProgram()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(gcc, "-Wall", "-Werror", "-I", kmod, "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("compiling the ABI check program %s: %v\n%s", src, err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatalf("running the ABI check program: %v", err)
	}
	values := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseUint(line[i+1:], 10, 64)
		if i < 0 || err != nil {
			t.Fatalf("unexpected line from the ABI check program: %q", line)
		}
		values[line[:i]] = v
	}
	return values
}

func TestABIMatchesCHeaders(t *testing.T) {
	c := cValues(t)
	get := func(key string) uint64 {
		t.Helper()
		v, ok := c[key]
		if !ok {
			t.Fatalf("the ABI check program printed no %q", key)
		}
		return v
	}
	for _, s := range abiStructs {
		if got, want := uint64(s.goType.Size()), get("sizeof "+s.c); got != want {
			t.Errorf("Go %s is %d bytes, C struct %s is %d", s.goType, got, s.c, want)
		}
		if got, want := uint64(s.size), get("sizeof "+s.c); got != want {
			t.Errorf("sizeof constant for %s is %d, C sizeof is %d", s.goType, got, want)
		}
		if s.goType.NumField() != len(s.fields) {
			t.Errorf("Go %s has %d fields, the table lists %d", s.goType, s.goType.NumField(), len(s.fields))
		}
		for _, f := range s.fields {
			gf, ok := s.goType.FieldByName(f[1])
			if !ok {
				t.Errorf("Go %s has no field %s", s.goType, f[1])
				continue
			}
			if got, want := uint64(gf.Offset), get("offsetof "+s.c+"."+f[0]); got != want {
				t.Errorf("offset of %s.%s is %d, C %s.%s is at %d", s.goType, f[1], got, s.c, f[0], want)
			}
			if got, want := uint64(gf.Type.Size()), get("sizeof "+s.c+"."+f[0]); got != want {
				t.Errorf("size of %s.%s is %d, C is %d", s.goType, f[1], got, want)
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(abiConsts)) {
		if got, want := abiConsts[name], get(name); got != want {
			t.Errorf("%s = %#x in Go, %#x in C", name, got, want)
		}
	}
}

package nvmelike

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"
)

func TestParseIdentifyNamespace(t *testing.T) {
	b := make([]byte, IdentifyDataSize)
	binary.LittleEndian.PutUint64(b[0:], 1000)
	b[25] = 2    // three formats
	b[26] = 0x12 // format 2, extended metadata bit set
	binary.LittleEndian.PutUint32(b[128:], 9<<16)
	binary.LittleEndian.PutUint32(b[132:], 12<<16)
	binary.LittleEndian.PutUint32(b[136:], 12<<16|8)
	ns, err := ParseIdentifyNamespace(1, b)
	if err != nil {
		t.Fatal(err)
	}
	if ns.LBASize != 4096 || ns.LBAF[2].MS != 8 || ns.Format() != 2 || ns.MetadataSize() != 8 || !ns.ExtendedLBA() {
		t.Errorf("%+v", ns)
	}
	b[26] = 0x01 // format 1: no metadata, none extended
	if ns, err := ParseIdentifyNamespace(1, b); err != nil || ns.MetadataSize() != 0 || ns.ExtendedLBA() {
		t.Errorf("format 1: metadata %d, extended %v, %v", ns.MetadataSize(), ns.ExtendedLBA(), err)
	}
	if n := (&IdentifyNamespace{FLBAS: 3}).MetadataSize(); n != 0 {
		t.Errorf("no formats: metadata size %d", n)
	}
	b[26] = 5 // past NLBAF
	if _, err := ParseIdentifyNamespace(1, b); !errors.Is(err, ErrMalformed) {
		t.Errorf("bad FLBAS: %v", err)
	}
	if _, err := ParseIdentifyNamespace(1, b[:100]); !errors.Is(err, ErrMalformed) {
		t.Errorf("short: %v", err)
	}
}

func TestParseActiveNamespaces(t *testing.T) {
	b := make([]byte, IdentifyDataSize)
	for i, id := range []uint32{1, 2, 7} {
		binary.LittleEndian.PutUint32(b[4*i:], id)
	}
	ids, err := ParseActiveNamespaces(b)
	if err != nil || !slices.Equal(ids, []uint32{1, 2, 7}) {
		t.Errorf("%v %v", ids, err)
	}
	binary.LittleEndian.PutUint32(b[12:], 3) // not increasing
	if _, err := ParseActiveNamespaces(b); !errors.Is(err, ErrMalformed) {
		t.Errorf("unordered list: %v", err)
	}
}

func TestParseNamespaceDescriptors(t *testing.T) {
	b := make([]byte, IdentifyDataSize)
	put := func(off int, typ uint8, id ...byte) int {
		b[off], b[off+1] = typ, uint8(len(id))
		copy(b[off+4:], id)
		return off + 4 + len(id)
	}
	off := put(0, 1, 1, 2, 3, 4, 5, 6, 7, 8)
	off = put(off, 9, 0xaa, 0xbb) // a type from a later revision: skipped
	off = put(off, 4, CSIZoned)
	ids, err := ParseNamespaceDescriptors(1, b)
	if err != nil {
		t.Fatal(err)
	}
	if ids.EUI64 != [8]byte{1, 2, 3, 4, 5, 6, 7, 8} || !ids.HasCSI || ids.CSI != CSIZoned || ids.NGUID != [16]byte{} {
		t.Errorf("%+v", ids)
	}
	if ids, err := ParseNamespaceDescriptors(1, make([]byte, IdentifyDataSize)); err != nil || ids.HasCSI || ids.CSI != CSINVM {
		t.Errorf("empty list: %+v, %v", ids, err)
	}
	put(off, 3, 1, 2, 3) // a UUID of three bytes
	if _, err := ParseNamespaceDescriptors(1, b); !errors.Is(err, ErrMalformed) {
		t.Errorf("short UUID: %v", err)
	}
	clear(b)
	for off = 0; off < 15*256; {
		off = put(off, 9, make([]byte, 252)...)
	}
	put(off, 9, make([]byte, 255)...) // runs past the end
	if _, err := ParseNamespaceDescriptors(1, b); !errors.Is(err, ErrMalformed) {
		t.Errorf("a descriptor past the end: %v", err)
	}
	if _, err := ParseNamespaceDescriptors(1, b[:100]); !errors.Is(err, ErrMalformed) {
		t.Errorf("short: %v", err)
	}
	if CSIName(CSIZoned) != "zoned (ZNS)" || CSIName(7) != "command set 0x07" {
		t.Errorf("names: %q, %q", CSIName(CSIZoned), CSIName(7))
	}
}

func FuzzParseIdentify(f *testing.F) {
	f.Add(make([]byte, IdentifyDataSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseIdentifyController(b)
		_, _ = ParseIdentifyNamespace(1, b)
		_, _ = ParseActiveNamespaces(b)
		_, _ = ParseNamespaceDescriptors(1, b)
	})
}

package iommu

import (
	"bytes"
	"errors"
	"testing"
)

func newIdentity(t testing.TB, o IdentityOptions) *Identity {
	t.Helper()
	m, err := NewIdentity(o)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestIdentityDefaults(t *testing.T) {
	m := newIdentity(t, IdentityOptions{})
	if got := m.Ranges(); len(got) != 2 || got[0] != QEMUIntelRanges[0] || got[1] != QEMUIntelRanges[1] {
		t.Errorf("Ranges() = %s, want QEMU's intel-iommu ranges", formatRanges(got))
	}
	l := m.Limits()
	if l.PageSize() != 4*kiB || l.MaxMappings != 65535 {
		t.Errorf("Limits() = %+v, page size %#x", l, l.PageSize())
	}
	if _, err := NewIdentity(IdentityOptions{Ranges: []Range{{2, 1}}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("a backwards range: got %v", err)
	}
	if _, err := NewIdentity(IdentityOptions{MaxMappings: -1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("a negative limit: got %v", err)
	}
}

func TestIdentityMapResolve(t *testing.T) {
	m := newIdentity(t, IdentityOptions{})
	mem := anonMemory(t, 64*kiB)
	for i := range mem {
		mem[i] = byte(i / 4096)
	}
	if err := m.Map(0x100000, mem[:32*kiB], PermReadWrite); err != nil {
		t.Fatal(err)
	}
	if err := m.Map(0x200000, mem[32*kiB:], PermRead); err != nil {
		t.Fatal(err)
	}
	if m.Len() != 2 || m.Limits().MaxMappings != 65533 {
		t.Errorf("Len() = %d, Limits() = %+v after two maps", m.Len(), m.Limits())
	}

	// Resolve returns the very memory mapped there.
	b, err := m.Resolve(0x100000+5*4096+7, 100, PermWrite)
	if err != nil {
		t.Fatal(err)
	}
	if &b[0] != &mem[5*4096+7] || len(b) != 100 || cap(b) != 100 {
		t.Errorf("Resolve returned other memory (len %d, cap %d)", len(b), cap(b))
	}
	b[0] = 0xee
	if mem[5*4096+7] != 0xee {
		t.Error("a write through Resolve does not reach the memory")
	}
	if b, err := m.Resolve(0x200000+4096, 4096, PermRead); err != nil || !bytes.Equal(b, mem[36*kiB:40*kiB]) {
		t.Errorf("reading the second mapping: %v", err)
	}
	if r, p, ok := m.Mapped(0x207fff); !ok || r != (Range{0x200000, 0x207fff}) || p != PermRead {
		t.Errorf("Mapped(0x207fff) = %s, %s, %v", r, p, ok)
	}

	for _, tc := range []struct {
		iova, size uint64
		perm       Perm
		want       error
	}{
		{0xfffff, 1, PermRead, ErrNotMapped},                        // just below
		{0x108000, 1, PermRead, ErrNotMapped},                       // just past the end
		{0x107fff, 2, PermRead, ErrNotMapped},                       // runs off the end
		{0x200000, 1, PermWrite, ErrPermission},                     // read-only mapping
		{0x200000, 32*kiB + 1, PermRead, ErrNotMapped},              // longer than the mapping
		{0x100000 + 32*kiB - 1, ^uint64(0), PermRead, ErrNotMapped}, // size overflows
	} {
		if _, err := m.Resolve(tc.iova, tc.size, tc.perm); !errors.Is(err, tc.want) {
			t.Errorf("Resolve(%#x, %#x, %s): got %v, want %v", tc.iova, tc.size, tc.perm, err, tc.want)
		}
	}
	if _, _, ok := m.Mapped(0x108000); ok {
		t.Error("Mapped(0x108000) found a mapping")
	}

	if err := m.Unmap(0x100000, 32*kiB); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Resolve(0x100000, 1, PermRead); !errors.Is(err, ErrNotMapped) {
		t.Errorf("Resolve after Unmap: got %v", err)
	}
	if err := m.Unmap(0x100000, 32*kiB); !errors.Is(err, ErrNotMapped) {
		t.Errorf("Unmap twice: got %v", err)
	}
	if err := m.Unmap(0x200000, 4*kiB); !errors.Is(err, ErrInvalid) {
		t.Errorf("unmapping part of a mapping: got %v", err)
	}
	if err := m.Unmap(0x200000, 32*kiB); err != nil || m.Len() != 0 {
		t.Errorf("Unmap = %v, Len() = %d", err, m.Len())
	}
}

func TestIdentityMapChecks(t *testing.T) {
	m := newIdentity(t, IdentityOptions{MaxMappings: 2})
	mem := anonMemory(t, 16*kiB)
	if err := m.Map(0x10000, mem[:8*kiB], PermReadWrite); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		iova uint64
		mem  []byte
		perm Perm
		want error
	}{
		{"empty", 0x100000, nil, PermRead, ErrInvalid},
		{"no permission", 0x100000, mem[:4*kiB], 0, ErrInvalid},
		{"bad permission", 0x100000, mem[:4*kiB], 4, ErrInvalid},
		{"misaligned iova", 0x100800, mem[:4*kiB], PermRead, ErrMisaligned},
		{"misaligned length", 0x100000, mem[:4*kiB+1], PermRead, ErrMisaligned},
		{"misaligned address", 0x100000, mem[512 : 4*kiB+512], PermRead, ErrMisaligned},
		{"in the interrupt window", 0xfee00000, mem[:4*kiB], PermRead, ErrOutOfRange},
		{"across the interrupt window", 0xfedff000, mem[:8*kiB], PermRead, ErrOutOfRange},
		{"past 39 bits", 1 << 39, mem[:4*kiB], PermRead, ErrOutOfRange},
		{"same iova", 0x10000, mem[8*kiB:], PermRead, ErrOverlap},
		{"overlapping the start", 0xf000, mem[8*kiB:], PermRead, ErrOverlap},
		{"overlapping the end", 0x11000, mem[8*kiB:], PermRead, ErrOverlap},
		{"covering", 0xf000, mem, PermRead, ErrOverlap},
	} {
		if err := m.Map(tc.iova, tc.mem, tc.perm); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	if m.Len() != 1 {
		t.Fatalf("failed maps left %d mappings", m.Len())
	}
	if err := m.Map(0x20000, mem[8*kiB:], PermRead); err != nil {
		t.Fatal(err)
	}
	err := m.Map(0x30000, mem[:4*kiB], PermRead)
	var le *LimitError
	if !errors.As(err, &le) || !le.Kernel || le.Limit != 2 {
		t.Errorf("a third mapping with MaxMappings 2: got %v, want a *LimitError", err)
	}
	if m.Limits().MaxMappings != 0 {
		t.Errorf("Limits().MaxMappings = %d at the limit", m.Limits().MaxMappings)
	}
}

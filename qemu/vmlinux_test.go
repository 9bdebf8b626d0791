package qemu

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// fakeBzImage wraps payload in a minimal bzImage setup header.
func fakeBzImage(payload []byte) []byte {
	const setupSects = 3
	img := make([]byte, (setupSects+1)*512+64)
	img[0x1f1] = setupSects
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x206:], 0x20f)
	binary.LittleEndian.PutUint32(img[0x248:], 64) // payload_offset
	binary.LittleEndian.PutUint32(img[0x24c:], uint32(len(payload)))
	return append(img, payload...)
}

func TestExtractVmlinux(t *testing.T) {
	if _, err := exec.LookPath("xz"); err != nil {
		t.Fatal("xz is needed (apt-get install xz-utils)")
	}
	elf := append([]byte("\x7fELF"), bytes.Repeat([]byte("kernel"), 1000)...)
	cmd := exec.Command("xz", "-c", "--check=crc32")
	cmd.Stdin = bytes.NewReader(elf)
	compressed, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	// The kernel build appends the uncompressed size.
	payload := binary.LittleEndian.AppendUint32(compressed, uint32(len(elf)))
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(src, fakeBzImage(payload), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := extractVmlinux(src, dst); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst)
	if err != nil || !bytes.Equal(got, elf) {
		t.Fatalf("extracted %d bytes (err %v), want the %d-byte ELF", len(got), err, len(elf))
	}

	// A wrong size trailer means a corrupt payload: refuse it.
	bad := binary.LittleEndian.AppendUint32(compressed, uint32(len(elf)+1))
	if err := os.WriteFile(src, fakeBzImage(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := extractVmlinux(src, filepath.Join(dir, "bad")); err == nil {
		t.Error("extracting a payload with a wrong size trailer succeeded")
	}
}

func TestBzImagePayloadRejectsGarbage(t *testing.T) {
	for name, img := range map[string][]byte{
		"empty":    nil,
		"short":    make([]byte, 0x100),
		"no magic": make([]byte, 4096),
		"too large": func() []byte {
			b := fakeBzImage([]byte("abcd"))
			binary.LittleEndian.PutUint32(b[0x24c:], 1<<30)
			return b
		}(),
		"old proto": func() []byte {
			b := fakeBzImage([]byte("abcd"))
			binary.LittleEndian.PutUint16(b[0x206:], 0x204)
			return b
		}(),
	} {
		if _, err := bzImagePayload(img); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzBzImagePayload(f *testing.F) {
	f.Add(fakeBzImage([]byte("payload!")))
	f.Fuzz(func(t *testing.T, img []byte) {
		p, err := bzImagePayload(img)
		if err == nil && len(p) < 4 {
			t.Fatalf("accepted a %d-byte payload", len(p))
		}
	})
}

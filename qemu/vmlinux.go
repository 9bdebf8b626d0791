package qemu

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Image returns the kernel image QEMU boots: the uncompressed ELF vmlinux,
// extracted from the package's bzImage once and cached beside it. QEMU
// starts such an image through its PVH entry point, which skips the
// kernel's self-decompression: under TCG that saves seconds per boot
// (xz-compressed 6.1 most of all). When extraction fails the bzImage is
// returned, which boots as well, only slower.
func (u UnpackedKernel) Image() string {
	out := filepath.Join(u.Root, "boot", "vmlinux-"+u.Release)
	if _, err := os.Stat(out); err == nil {
		return out
	}
	if err := extractVmlinux(u.Vmlinuz(), out); err != nil {
		return u.Vmlinuz()
	}
	return out
}

// extractVmlinux writes the ELF kernel inside bzImage src to dst.
func extractVmlinux(src, dst string) error {
	img, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	payload, err := bzImagePayload(img)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	var tool []string
	switch {
	case bytes.HasPrefix(payload, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		tool = []string{"zstd", "-dcq"}
	case bytes.HasPrefix(payload, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		tool = []string{"xz", "-dcq", "--single-stream"}
	case bytes.HasPrefix(payload, []byte{0x1f, 0x8b}):
		tool = []string{"gzip", "-dcq"}
	default:
		return fmt.Errorf("%s: unknown compression of the kernel payload", src)
	}
	// The build appends the uncompressed size as 4 little-endian bytes;
	// decompressors may complain about that trailer, so judge the result
	// by its size, not by their exit status.
	want := int(binary.LittleEndian.Uint32(payload[len(payload)-4:]))
	cmd := exec.Command(tool[0], tool[1:]...)
	cmd.Stdin = bytes.NewReader(payload)
	var elf bytes.Buffer
	cmd.Stdout = &elf
	_ = cmd.Run()
	if elf.Len() != want || !bytes.HasPrefix(elf.Bytes(), []byte("\x7fELF")) {
		return fmt.Errorf("%s: decompressed %d bytes, expected an ELF image of %d", src, elf.Len(), want)
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, elf.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// bzImagePayload returns the compressed kernel inside a bzImage, located
// by the setup header's payload_offset and payload_length (boot protocol
// 2.08 and later; see Documentation/arch/x86/boot.rst).
func bzImagePayload(img []byte) ([]byte, error) {
	if len(img) < 0x250 || string(img[0x202:0x206]) != "HdrS" {
		return nil, errors.New("not a bzImage (no HdrS setup header)")
	}
	if binary.LittleEndian.Uint16(img[0x206:]) < 0x208 {
		return nil, errors.New("boot protocol older than 2.08 has no payload fields")
	}
	setupSects := int(img[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	off := (setupSects+1)*512 + int(binary.LittleEndian.Uint32(img[0x248:]))
	n := int(binary.LittleEndian.Uint32(img[0x24c:]))
	if n < 4 || off < 0 || off+n > len(img) {
		return nil, fmt.Errorf("payload [%d, +%d) lies outside the %d-byte image", off, n, len(img))
	}
	return img[off : off+n], nil
}

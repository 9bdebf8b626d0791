package qemu

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BuildCommands builds every command under the module's cmd/ directory as
// a static binary (CGO_ENABLED=0) into dir, for the guest's PATH. moduleDir
// is the module root.
func BuildCommands(moduleDir, dir string) error {
	if _, err := os.Stat(filepath.Join(moduleDir, "cmd")); os.IsNotExist(err) {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	list := exec.Command("go", "list", "-e", "-f", `{{if eq .Name "main"}}{{.ImportPath}}{{end}}`, "./cmd/...")
	list.Dir = moduleDir
	out, err := list.Output()
	if err != nil {
		return fmt.Errorf("listing the commands under cmd/: %w", err)
	}
	mains := strings.Fields(string(out))
	if len(mains) == 0 {
		return nil
	}
	// -s -w: no symbol table or DWARF (stack traces still work): the
	// binaries travel in the initramfs, which the kernel unpacks at boot.
	return goCmd(moduleDir, append([]string{"build", "-trimpath", "-ldflags=-s -w", "-o", dir + string(filepath.Separator)}, mains...)...)
}

// goCmd runs the go tool in dir with cgo off, so the results run in the
// guest, which has no C library.
func goCmd(dir string, args ...string) error {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	return nil
}

package pcietest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// A Kernel stands in for the kernel behind a Tree's writable sysfs files,
// so that code that binds drivers can run against a fake tree: writes to
// driver_override, drivers/NAME/unbind and drivers_probe move the driver
// links as the kernel would, and Modprobe makes a driver directory
// appear. It is deliberately simple: a probe binds the function to its
// driver_override if that driver is loaded, else to Claims[class] if
// that is loaded, else leaves it unbound.
type Kernel struct {
	tr *Tree
	// Claims maps a class code (0x010802) to the driver that claims it
	// by ID, as nvme claims NVMe controllers.
	Claims map[uint32]string
	// FailProbe names drivers whose probe fails (the function stays
	// unbound).
	FailProbe map[string]bool
	// Writes lists every write, "PATH<-VALUE", relative to the root.
	Writes []string
	// Loaded lists the modules Modprobe loaded.
	Loaded []string
}

// Kernel returns a kernel for the tree; NVMe controllers are claimed by
// nvme.
func (tr *Tree) Kernel() *Kernel {
	return &Kernel{tr: tr, Claims: map[uint32]string{ClassNVMe: "nvme"}, FailProbe: map[string]bool{}}
}

// Modprobe loads a "module": bus/pci/drivers/NAME appears. Unknown names
// ("nosuch") fail as modprobe does.
func (k *Kernel) Modprobe(name string) error {
	if strings.HasPrefix(name, "nosuch") {
		return fmt.Errorf("modprobe: FATAL: Module %s not found", name)
	}
	k.Loaded = append(k.Loaded, name)
	return os.MkdirAll(filepath.Join(k.tr.Root, "bus/pci/drivers", name), 0o755)
}

// Write performs a write to a sysfs file of the tree.
func (k *Kernel) Write(path, value string) error {
	rel, err := filepath.Rel(k.tr.Root, path)
	if err != nil || strings.HasPrefix(rel, "..") {
		return fmt.Errorf("pcietest: write outside the tree: %s", path)
	}
	rel = filepath.ToSlash(rel)
	k.Writes = append(k.Writes, rel+"<-"+strings.TrimSpace(value))
	v := strings.TrimSpace(value)
	parts := strings.Split(rel, "/")
	switch {
	case len(parts) == 5 && parts[0] == "bus" && parts[3] != "" && parts[4] == "driver_override":
		if v == "" {
			v = "(null)"
		}
		return os.WriteFile(path, []byte(v+"\n"), 0o644)
	case len(parts) == 5 && parts[2] == "drivers" && parts[4] == "unbind":
		return k.unbind(v, parts[3])
	case rel == "bus/pci/drivers_probe":
		return k.probe(v)
	}
	return fmt.Errorf("pcietest: the kernel does not emulate writing %s", rel)
}

func (k *Kernel) devDir(bdf string) string { return filepath.Join(k.tr.Root, "bus/pci/devices", bdf) }

func (k *Kernel) unbind(bdf, driver string) error {
	link := filepath.Join(k.devDir(bdf), "driver")
	t, err := os.Readlink(link)
	if err != nil || filepath.Base(t) != driver {
		return errors.New("no such device") // ENODEV, as the kernel says
	}
	if err := os.Remove(link); err != nil {
		return err
	}
	return os.Remove(filepath.Join(k.tr.Root, "bus/pci/drivers", driver, bdf))
}

func (k *Kernel) probe(bdf string) error {
	dir := k.devDir(bdf)
	if _, err := os.Lstat(filepath.Join(dir, "driver")); err == nil {
		return nil // bound already: nothing to probe
	}
	drv := ""
	if b, err := os.ReadFile(filepath.Join(dir, "driver_override")); err == nil {
		if s := strings.TrimSpace(string(b)); s != "(null)" {
			drv = s
		}
	}
	if drv == "" {
		var class uint32
		if b, err := os.ReadFile(filepath.Join(dir, "class")); err == nil {
			fmt.Sscanf(strings.TrimSpace(string(b)), "0x%x", &class)
		}
		drv = k.Claims[class]
	}
	if drv == "" || k.FailProbe[drv] {
		return nil
	}
	drvDir := filepath.Join(k.tr.Root, "bus/pci/drivers", drv)
	if _, err := os.Stat(drvDir); err != nil {
		return nil // not loaded: no driver takes it
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	k.tr.symlink(filepath.Join(real, "driver"), drvDir)
	k.tr.symlink(filepath.Join(drvDir, bdf), real)
	return nil
}

package qemu

import (
	"regexp"
	"strings"
	"testing"
)

func TestTopologiesAreConsistent(t *testing.T) {
	serials := map[string]string{}
	for _, name := range TopologyNames() {
		top, err := LookupTopology(name)
		if err != nil {
			t.Fatal(err)
		}
		if top.Name != name {
			t.Errorf("topology %q is named %q inside", name, top.Name)
		}
		for _, c := range top.Controllers() {
			if other, dup := serials[c.Serial]; dup {
				t.Errorf("serial %s used by %s and %s", c.Serial, other, name)
			}
			serials[c.Serial] = name
			if len(c.Serial) > 20 {
				t.Errorf("serial %q longer than NVMe's 20 bytes", c.Serial)
			}
			if len(c.Namespaces) == 0 {
				t.Errorf("%s: controller %s has no namespace", name, c.Serial)
			}
		}
		args, disks := top.qemuArgs("/run", 2048, 2, AIOThreads)
		checkQEMUArgs(t, name, top, args, disks)
	}
}

// checkQEMUArgs checks that every bus a device names was defined before
// it, ids are unique, and every controller and namespace appears.
func checkQEMUArgs(t *testing.T, name string, top Topology, args []string, disks []disk) {
	t.Helper()
	ids := map[string]bool{"pcie.0": true}
	drives := map[string]bool{}
	nvme, ns := 0, 0
	opt := regexp.MustCompile(`(?:^|,)([a-z_]+)=([^,]*)`)
	for i := 0; i+1 < len(args); i++ {
		kv := map[string]string{}
		for _, m := range opt.FindAllStringSubmatch(args[i+1], -1) {
			kv[m[1]] = m[2]
		}
		switch args[i] {
		case "-drive":
			drives[kv["id"]] = true
		case "-device":
			kind, _, _ := strings.Cut(args[i+1], ",")
			if bus, ok := kv["bus"]; ok && !ids[bus] {
				t.Errorf("%s: %s on bus %q, which is not defined before it", name, kind, bus)
			}
			if id := kv["id"]; id != "" {
				if ids[id] {
					t.Errorf("%s: id %q defined twice", name, id)
				}
				ids[id] = true
			}
			switch kind {
			case "nvme":
				nvme++
			case "nvme-ns":
				ns++
				if !drives[kv["drive"]] {
					t.Errorf("%s: namespace uses undefined drive %q", name, kv["drive"])
				}
			}
		}
	}
	total := 0
	for _, c := range top.Controllers() {
		total += len(c.Namespaces)
		if c.SRIOV != nil {
			total += len(c.SRIOV.VFNamespaces)
		}
	}
	if nvme != len(top.Controllers()) || ns != total || len(disks) != total {
		t.Errorf("%s: %d nvme, %d nvme-ns, %d disks; want %d controllers and %d namespaces", name, nvme, ns, len(disks), len(top.Controllers()), total)
	}
}

func TestCardsTopology(t *testing.T) {
	top, err := LookupTopology("cards")
	if err != nil {
		t.Fatal(err)
	}
	if len(top.Switches) != 2 || len(top.RootPorts) != 1 {
		t.Fatalf("cards has %d switches and %d lone root ports, want 2 and 1", len(top.Switches), len(top.RootPorts))
	}
	for i, s := range top.Switches {
		if len(s.Controllers) != 2 {
			t.Errorf("switch %d has %d controllers, want 2", i, len(s.Controllers))
		}
	}
	sizes, counts := map[int]bool{}, map[int]bool{}
	for _, c := range top.Controllers() {
		total := 0
		for _, mib := range c.Namespaces {
			total += mib
		}
		sizes[total] = true
		counts[len(c.Namespaces)] = true
	}
	if len(sizes) < 3 || len(counts) < 3 {
		t.Errorf("cards should mix sizes and namespace counts: %d sizes, %d counts", len(sizes), len(counts))
	}
	blocks := map[int]bool{}
	for _, c := range top.Controllers() {
		for i := range c.Namespaces {
			blocks[c.BlockSize(i)] = true
		}
	}
	if !blocks[512] || !blocks[4096] {
		t.Errorf("cards should have namespaces of 512 B and 4 KiB blocks: %v", blocks)
	}
	if _, err := LookupTopology("card"); err == nil || !strings.Contains(err.Error(), "cards") {
		t.Errorf("unknown topology error should list the known ones: %v", err)
	}
}

// TestDiskAIO: every namespace's -drive carries the disk I/O mode asked
// for, and only the two modes the harness runs are accepted.
func TestDiskAIO(t *testing.T) {
	top, _ := LookupTopology("cards")
	for _, mode := range []string{AIOThreads, AIOIOURing} {
		args, disks := top.qemuArgs("/run", 2048, 2, mode)
		drives := 0
		for i, a := range args {
			if a == "-drive" {
				drives++
				if !strings.HasSuffix(args[i+1], ",aio="+mode) {
					t.Errorf("%s: -drive %s", mode, args[i+1])
				}
			}
		}
		if drives != len(disks) || drives == 0 {
			t.Errorf("%s: %d -drive arguments for %d disks", mode, drives, len(disks))
		}
		if err := checkAIO(mode); err != nil {
			t.Error(err)
		}
	}
	for _, bad := range []string{"native", "uring", ""} {
		if checkAIO(bad) == nil {
			t.Errorf("disk I/O mode %q accepted", bad)
		}
	}
	if m := DefaultAIO(); m != AIOThreads && m != AIOIOURing {
		t.Errorf("DefaultAIO() = %q", m)
	}
}

func TestNUMATopologyArgs(t *testing.T) {
	top, _ := LookupTopology("numa")
	args, _ := top.qemuArgs("/run", 2048, 2, AIOThreads)
	joined := strings.Join(args, " ")
	for _, want := range []string{"node,nodeid=0,memdev=mem0,cpus=0-0", "node,nodeid=1,memdev=mem1,cpus=1-1", "numa_node=0", "numa_node=1", "size=1024M"} {
		if !strings.Contains(joined, want) {
			t.Errorf("numa args lack %q:\n%s", want, joined)
		}
	}
}

// TestDiskFaultsArgs: a namespace with faults gets its backing file
// through blkdebug, failing exactly the sectors asked for, with the
// topology's disk I/O mode still set; the others stay plain files.
func TestDiskFaultsArgs(t *testing.T) {
	top, _ := LookupTopology("quirks")
	args, disks := top.qemuArgs("/run", 2048, 2, AIOIOURing)
	var faulty, plain int
	for i, a := range args {
		if a != "-drive" {
			continue
		}
		spec := args[i+1]
		if !strings.Contains(spec, ",aio="+AIOIOURing) {
			t.Errorf("-drive %s: no aio=%s", spec, AIOIOURing)
		}
		if !strings.Contains(spec, "blkdebug") {
			plain++
			continue
		}
		faulty++
		for _, want := range []string{"file.image.filename=/run/", "inject-error.0.event=read_aio", "inject-error.0.sector=1000", "inject-error.1.event=write_aio", "inject-error.1.sector=2000", "errno=5"} {
			if !strings.Contains(spec, want) {
				t.Errorf("-drive %s: lacks %s", spec, want)
			}
		}
	}
	if faulty != 1 || plain != len(disks)-1 {
		t.Errorf("%d drives through blkdebug and %d plain for %d disks; want 1 with faults", faulty, plain, len(disks))
	}
	if got := driveSpec("d", "/x.img", AIOThreads, &DiskFaults{WriteSector: 7}); !strings.Contains(got, "inject-error.0.event=write_aio") || strings.Contains(got, "read_aio") {
		t.Errorf("write faults only: %s", got)
	}
}

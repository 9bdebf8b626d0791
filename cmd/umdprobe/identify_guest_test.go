//go:build guest

package main

import (
	"encoding/json"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/qemu"
	"github.com/umdkit/umd/qemu/guest"
)

// TestGuestIdentify identifies every NVMe controller of the guest through
// umd and checks serials, namespaces (their sizes and command sets) and
// transfer limits against the topology.
func TestGuestIdentify(t *testing.T) {
	guest.Require(t)
	if d := guest.Driver(); d != "" && d != "vfio-pci" {
		t.Skipf("the guest bound its NVMe functions to %s, not vfio-pci", d)
	}
	top, err := qemu.LookupTopology(guest.Topology())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]qemu.Controller{}
	for _, c := range top.Controllers() {
		want[c.Serial] = c
	}

	code, out, errOut := umdprobe(t, "identify", "-o", "json")
	if code != exitOK || errOut != "" {
		t.Fatalf("identify -o json: exit %d, stderr %q", code, errOut)
	}
	var doc identifyDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	bdfs := guest.DriverFunctions(t, "vfio-pci")
	if doc.Schema != schemaIdentify || len(doc.Controllers) != len(bdfs) || len(doc.Controllers) != len(want) {
		t.Fatalf("schema %q, %d controllers; %d functions on vfio-pci, topology has %d", doc.Schema, len(doc.Controllers), len(bdfs), len(want))
	}
	seen := map[string]bool{}
	for i, c := range doc.Controllers {
		w, ok := want[c.Serial]
		if !ok || seen[c.Serial] || c.BDF != bdfs[i] || c.VendorID != "1b36" {
			t.Errorf("%s: serial %q, vendor %s; topology serials %v", c.BDF, c.Serial, c.VendorID, want)
			continue
		}
		seen[c.Serial] = true
		if len(c.Namespaces) != len(w.Namespaces) || int(c.NN) < len(w.Namespaces) {
			t.Errorf("%s (%s): %d namespaces (NN %d); topology says %d", c.BDF, c.Serial, len(c.Namespaces), c.NN, len(w.Namespaces))
			continue
		}
		for j, ns := range c.Namespaces {
			var nsProps string
			if j < len(w.NamespaceProperties) {
				nsProps = w.NamespaceProperties[j]
			}
			// QEMU keeps a namespace's metadata in its backing file: one
			// formatted with metadata has fewer bytes of data.
			size := uint64(w.Namespaces[j]) << 20
			bytesOK := ns.Bytes == size
			if _, ok := property(nsProps, "ms"); ok {
				bytesOK = ns.Bytes < size && ns.Bytes > size*9/10
			}
			if ns.Error != "" || ns.NSID != uint32(j+1) || !bytesOK {
				t.Errorf("%s (%s) namespace %d: %+v; topology says %d MiB", c.BDF, c.Serial, j+1, ns, w.Namespaces[j])
			}
			csi := nvmelike.CSINVM
			if v, _ := property(nsProps, "zoned"); v == "true" {
				csi = nvmelike.CSIZoned
			}
			if ns.CSI != csi || ns.CommandSet != nvmelike.CSIName(csi) {
				t.Errorf("%s (%s) namespace %d: command set %d (%q), want %d", c.BDF, c.Serial, j+1, ns.CSI, ns.CommandSet, csi)
			}
		}
		if c.MaxTransfer == 0 || c.EngineMaxTransfer == 0 || c.PoolPageSize == 0 {
			t.Errorf("%s: max transfer %d, engine %d, pool pages %d", c.BDF, c.MaxTransfer, c.EngineMaxTransfer, c.PoolPageSize)
		}
		if v, ok := property(w.Properties, "mdts"); ok {
			if n, _ := strconv.Atoi(v); c.MDTS != uint8(n) || c.MaxTransfer != 4096<<n || c.EngineMaxTransfer != 4096<<n {
				t.Errorf("%s (%s): MDTS %d, max transfer %d, the engine's %d; want mdts=%s", c.BDF, c.Serial, c.MDTS, c.MaxTransfer, c.EngineMaxTransfer, v)
			}
		}
		if zoned := slices.ContainsFunc(c.Namespaces, func(ns nsDoc) bool { return ns.CSI == nvmelike.CSIZoned }); zoned {
			// The text form says so.
			_, text, _ := umdprobe(t, "identify", c.BDF)
			if !regexp.MustCompile(`(?m)^    command set +zoned \(ZNS\)$`).MatchString(text) {
				t.Errorf("identify %s: no command set line for its zoned namespace:\n%s", c.BDF, text)
			}
		}
	}

	for sn := range want {
		if !seen[sn] {
			t.Errorf("controller %s of the topology not identified", sn)
		}
	}

	// The text form of one controller, for the record.
	code, out, errOut = umdprobe(t, "identify", bdfs[0])
	t.Logf("umdprobe identify %s:\n%s", bdfs[0], out)
	if code != exitOK || errOut != "" {
		t.Errorf("identify %s: exit %d, stderr %q", bdfs[0], code, errOut)
	}
	// A selection with no NVMe controller in it: a one-line error.
	code, out, errOut = umdprobe(t, "identify", "00:00.0")
	if code != exitNoMatch || out != "" || errOut != "umdprobe: the selected functions are bridges and ports, not NVMe controllers\n" {
		t.Errorf("identify 00:00.0: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// property returns the value of name in QEMU properties "a=1,b=2" and
// whether it is there.
func property(props, name string) (string, bool) {
	for _, p := range strings.Split(props, ",") {
		if k, v, ok := strings.Cut(p, "="); ok && k == name {
			return v, true
		}
	}
	return "", false
}

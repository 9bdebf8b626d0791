package dra

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// deployDir holds the DeviceClasses and example claims.
const deployDir = "../deploy/dra"

// TestDeployManifests decodes every manifest in deploy/dra strictly into
// the resource.k8s.io/v1 types and checks what can be checked without an
// API server: names, the driver, opaque parameters (through
// ParseParameters), matchAttribute names and the CEL expressions' shape
// and the attributes they read.
func TestDeployManifests(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(deployDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", deployDir, err)
	}
	kinds := map[string][]string{}
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range splitYAML(raw) {
			where := fmt.Sprintf("%s document %d", filepath.Base(file), i)
			var meta struct{ APIVersion, Kind string }
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			if meta.APIVersion != "resource.k8s.io/v1" {
				t.Errorf("%s: apiVersion %q", where, meta.APIVersion)
			}
			switch meta.Kind {
			case "DeviceClass":
				var dc resourceapi.DeviceClass
				if err := yaml.UnmarshalStrict(doc, &dc); err != nil {
					t.Fatalf("%s: %v", where, err)
				}
				checkName(t, where, dc.Name)
				if len(dc.Spec.Selectors) == 0 {
					t.Errorf("%s: a class without selectors", where)
				}
				for _, s := range dc.Spec.Selectors {
					checkCEL(t, where, s, true)
				}
				for _, c := range dc.Spec.Config {
					checkOpaque(t, where, c.Opaque)
				}
				kinds["DeviceClass"] = append(kinds["DeviceClass"], dc.Name)
			case "ResourceClaim":
				var rc resourceapi.ResourceClaim
				if err := yaml.UnmarshalStrict(doc, &rc); err != nil {
					t.Fatalf("%s: %v", where, err)
				}
				checkName(t, where, rc.Name)
				checkClaim(t, where, rc.Spec)
				kinds["ResourceClaim"] = append(kinds["ResourceClaim"], rc.Name)
			case "ResourceClaimTemplate":
				var rct resourceapi.ResourceClaimTemplate
				if err := yaml.UnmarshalStrict(doc, &rct); err != nil {
					t.Fatalf("%s: %v", where, err)
				}
				checkName(t, where, rct.Name)
				checkClaim(t, where, rct.Spec.Spec)
				kinds["ResourceClaimTemplate"] = append(kinds["ResourceClaimTemplate"], rct.Name)
			default:
				t.Errorf("%s: unexpected kind %q", where, meta.Kind)
			}
		}
	}
	// What the issue asks to ship.
	for _, want := range []string{"umd.umdkit.io", "numa0.umd.umdkit.io", "exclusive.umd.umdkit.io", "share.umd.umdkit.io"} {
		if !slices.Contains(kinds["DeviceClass"], want) {
			t.Errorf("no DeviceClass %s among %q", want, kinds["DeviceClass"])
		}
	}
	for _, want := range []string{"umd-numa1", "umd-same-card", "umd-exclusive", "umd-shares-same-card"} {
		if !slices.Contains(kinds["ResourceClaim"], want) {
			t.Errorf("no ResourceClaim %s among %q", want, kinds["ResourceClaim"])
		}
	}
	// What the cluster tests use.
	for _, want := range []string{"umd-numa1-per-pod", "umd-polled-per-pod", "umd-share-per-pod"} {
		if !slices.Contains(kinds["ResourceClaimTemplate"], want) {
			t.Errorf("no ResourceClaimTemplate %s among %q", want, kinds["ResourceClaimTemplate"])
		}
	}
}

func splitYAML(raw []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(raw), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^#.*$`).ReplaceAllString(d, "")) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func checkName(t *testing.T, where, name string) {
	t.Helper()
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		t.Errorf("%s: name %q: %v", where, name, errs)
	}
}

func checkClaim(t *testing.T, where string, spec resourceapi.ResourceClaimSpec) {
	t.Helper()
	requests := map[string]bool{}
	for _, r := range spec.Devices.Requests {
		requests[r.Name] = true
		if r.Exactly == nil {
			t.Errorf("%s: request %s is not an exact request", where, r.Name)
			continue
		}
		if !strings.HasSuffix(r.Exactly.DeviceClassName, DriverName) {
			t.Errorf("%s: request %s uses class %q, not one of umd's", where, r.Name, r.Exactly.DeviceClassName)
		}
		for _, s := range r.Exactly.Selectors {
			checkCEL(t, where, s, false)
		}
	}
	for _, c := range spec.Devices.Constraints {
		for _, r := range c.Requests {
			if !requests[r] {
				t.Errorf("%s: constraint names request %q, which the claim lacks", where, r)
			}
		}
		if c.MatchAttribute != nil && !knownAttribute(resourceapi.QualifiedName(*c.MatchAttribute)) {
			t.Errorf("%s: matchAttribute %q is not an attribute umd publishes", where, *c.MatchAttribute)
		}
	}
	for _, c := range spec.Devices.Config {
		for _, r := range c.Requests {
			if !requests[r] {
				t.Errorf("%s: config names request %q, which the claim lacks", where, r)
			}
		}
		checkOpaque(t, where, c.Opaque)
	}
}

func checkOpaque(t *testing.T, where string, o *resourceapi.OpaqueDeviceConfiguration) {
	t.Helper()
	if o == nil {
		t.Errorf("%s: config without opaque parameters", where)
		return
	}
	if o.Driver != DriverName {
		t.Errorf("%s: opaque config for driver %q", where, o.Driver)
	}
	if _, err := ParseParameters(o.Parameters.Raw); err != nil {
		t.Errorf("%s: parameters: %v", where, err)
	}
}

var celAttr = regexp.MustCompile(`device\.attributes\["([^"]+)"\]\.([A-Za-z_][A-Za-z0-9_]*)`)

// checkCEL checks an expression's shape without a CEL parser: brackets
// and quotes balance, it names the driver when it must (a class), and
// every attribute it reads is one umd publishes.
func checkCEL(t *testing.T, where string, s resourceapi.DeviceSelector, mustNameDriver bool) {
	t.Helper()
	if s.CEL == nil || strings.TrimSpace(s.CEL.Expression) == "" {
		t.Errorf("%s: selector without a CEL expression", where)
		return
	}
	e := s.CEL.Expression
	if err := balanced(e); err != nil {
		t.Errorf("%s: %q: %v", where, e, err)
	}
	if mustNameDriver && !strings.Contains(e, `device.driver == "`+DriverName+`"`) {
		t.Errorf("%s: %q does not select driver %s", where, e, DriverName)
	}
	if strings.Contains(e, "device.attributes.") || strings.Contains(e, "device.capacity.") {
		t.Errorf("%s: %q: attributes are maps keyed by domain: device.attributes[\"domain\"].name", where, e)
	}
	ms := celAttr.FindAllStringSubmatch(e, -1)
	if strings.Count(e, "device.attributes[") != len(ms) {
		t.Errorf("%s: %q reads attributes in a form this test does not know", where, e)
	}
	for _, m := range ms {
		if n := resourceapi.QualifiedName(m[1] + "/" + m[2]); !knownAttribute(n) {
			t.Errorf("%s: %q reads %s, which umd does not publish", where, e, n)
		}
	}
}

// balanced reports unbalanced (), [], {} or an unterminated string.
func balanced(e string) error {
	var stack []byte
	pairs := map[byte]byte{')': '(', ']': '[', '}': '{'}
	for i := 0; i < len(e); i++ {
		switch c := e[i]; c {
		case '"', '\'':
			j := i + 1
			for j < len(e) && e[j] != c {
				if e[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(e) {
				return fmt.Errorf("unterminated string at %d", i)
			}
			i = j
		case '(', '[', '{':
			stack = append(stack, c)
		case ')', ']', '}':
			if len(stack) == 0 || stack[len(stack)-1] != pairs[c] {
				return fmt.Errorf("unbalanced %c at %d", c, i)
			}
			stack = stack[:len(stack)-1]
		}
	}
	if len(stack) > 0 {
		return fmt.Errorf("%d unclosed brackets", len(stack))
	}
	if bytes.Contains([]byte(e), []byte("&&&")) || strings.HasSuffix(strings.TrimSpace(e), "&&") || strings.HasSuffix(strings.TrimSpace(e), "||") {
		return fmt.Errorf("dangling operator")
	}
	return nil
}

// knownAttribute reports whether umd publishes an attribute (or
// capacity) of that name.
func knownAttribute(n resourceapi.QualifiedName) bool {
	return slices.Contains([]resourceapi.QualifiedName{
		AttrPCIeRoot, AttrPCIBusID, AttrNUMANode, AttrCard, AttrVendorID, AttrDeviceID,
		AttrIOMMUGroup, AttrFunction, AttrPhysFn, AttrModel, AttrSerial, AttrNamespaces,
		AttrController, AttrShare, CapStorage, CapQueuePairs,
	}, n)
}

func TestBalanced(t *testing.T) {
	for e, ok := range map[string]bool{
		`device.driver == "a"`:                         true,
		`device.attributes["a"].b == 0`:                true,
		`device.attributes["a"].b == 0 &&`:             false,
		`device.attributes["a".b == 0`:                 false,
		`(device.driver == "a"`:                        false,
		`device.driver == "a)"`:                        true,
		`device.driver == "unterminated`:               false,
		`device.attributes["a"].b in [1, 2]`:           true,
		`device.attributes["a"].b in [1, 2)`:           false,
		`device.driver == 'x' || device.driver == "y"`: true,
	} {
		if err := balanced(e); (err == nil) != ok {
			t.Errorf("balanced(%q) = %v, want ok=%v", e, err, ok)
		}
	}
}

// TestDeviceClassesShares: every shipped class that means whole devices
// excludes shares (they carry the controller's attributes, so a selector
// on those alone would match them too), and the share class takes only
// shares. The cluster tests check what the scheduler makes of them.
func TestDeviceClassesShares(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(deployDir, "deviceclasses.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const share = `device.attributes["umd.umdkit.io"].share`
	shareClasses := 0
	for _, doc := range splitYAML(raw) {
		var dc resourceapi.DeviceClass
		if err := yaml.UnmarshalStrict(doc, &dc); err != nil {
			t.Fatal(err)
		}
		var all []string
		for _, s := range dc.Spec.Selectors {
			all = append(all, s.CEL.Expression)
		}
		e := strings.Join(all, " && ")
		switch {
		case dc.Name == "share."+DriverName:
			shareClasses++
			if !strings.Contains(e, "&& "+share) && !strings.HasPrefix(e, share) {
				t.Errorf("DeviceClass %s: %q does not require %s", dc.Name, e, share)
			}
		case !strings.Contains(e, "!"+share):
			t.Errorf("DeviceClass %s: %q does not exclude shares (!%s)", dc.Name, e, share)
		}
	}
	if shareClasses != 1 {
		t.Errorf("%d DeviceClasses share.%s", shareClasses, DriverName)
	}
}

package cluster

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// readArchive returns an archive's files by name.
func readArchive(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = data
	}
}

// TestImageArchive checks the OCI layout an importer reads: every blob is
// stored under its digest with the size its descriptor says, the index
// names the image, the config's diff ID is the uncompressed layer's
// digest, and the layer holds the file (mode 0755) under its parents.
func TestImageArchive(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "prog")
	if err := os.WriteFile(bin, []byte("#!/bin/true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	img := Image{Name: "umd.local/test:1", Files: map[string]string{"/usr/bin/prog": bin}, Entrypoint: []string{"/usr/bin/prog"}}
	var buf bytes.Buffer
	if err := img.WriteArchive(&buf); err != nil {
		t.Fatal(err)
	}
	files := readArchive(t, buf.Bytes())
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Fatalf("oci-layout: %q", files["oci-layout"])
	}
	blob := func(d descriptor) []byte {
		t.Helper()
		b, ok := files["blobs/sha256/"+strings.TrimPrefix(d.Digest, "sha256:")]
		if !ok {
			t.Fatalf("no blob %s", d.Digest)
		}
		if digest(b) != d.Digest || int64(len(b)) != d.Size {
			t.Fatalf("blob %s: digest %s size %d, descriptor says size %d", d.Digest, digest(b), len(b), d.Size)
		}
		return b
	}
	var index struct{ Manifests []descriptor }
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 1 || index.Manifests[0].Annotations[annotCtrName] != img.Name || index.Manifests[0].Annotations[annotRefName] != img.Name {
		t.Fatalf("index: %+v", index)
	}
	var manifest struct {
		Config descriptor
		Layers []descriptor
	}
	if err := json.Unmarshal(blob(index.Manifests[0]), &manifest); err != nil {
		t.Fatal(err)
	}
	var config struct {
		OS     string
		Config struct{ Entrypoint []string }
		Rootfs struct {
			DiffIDs []string `json:"diff_ids"`
		}
	}
	if err := json.Unmarshal(blob(manifest.Config), &config); err != nil {
		t.Fatal(err)
	}
	if config.OS != "linux" || len(config.Config.Entrypoint) != 1 || config.Config.Entrypoint[0] != "/usr/bin/prog" {
		t.Fatalf("config: %+v", config)
	}
	if len(manifest.Layers) != 1 || manifest.Layers[0].MediaType != mediaLayer {
		t.Fatalf("layers: %+v", manifest.Layers)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob(manifest.Layers[0])))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if len(config.Rootfs.DiffIDs) != 1 || config.Rootfs.DiffIDs[0] != digest(raw) {
		t.Fatalf("diff IDs %v, uncompressed layer is %s", config.Rootfs.DiffIDs, digest(raw))
	}
	tr := tar.NewReader(bytes.NewReader(raw))
	seen := map[string]int64{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		seen[h.Name] = h.Mode
		if h.Name == "usr/bin/prog" {
			data, _ := io.ReadAll(tr)
			if string(data) != "#!/bin/true\n" {
				t.Fatalf("usr/bin/prog holds %q", data)
			}
		}
	}
	for name, mode := range map[string]int64{"usr/": 0o755, "usr/bin/": 0o755, "usr/bin/prog": 0o755, "tmp/": 0o1777} {
		if m, ok := seen[name]; !ok || m != mode {
			t.Errorf("layer entry %s: mode %o present %v, want %o", name, m, ok, mode)
		}
	}
	// The same inputs make the same archive.
	var again bytes.Buffer
	if err := img.WriteArchive(&again); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Error("two archives of the same image differ")
	}
}

func TestImageArchiveRefusesBadInput(t *testing.T) {
	for _, img := range []Image{
		{Name: "no-tag", Files: map[string]string{}},
		{Name: "a:1", Files: map[string]string{"relative/path": "/dev/null"}},
		{Name: "a:1", Files: map[string]string{"/usr/../etc/x": "/dev/null"}},
		{Name: "a:1", Files: map[string]string{"/x": filepath.Join(t.TempDir(), "missing")}},
	} {
		if err := img.WriteArchive(io.Discard); err == nil {
			t.Errorf("%+v: accepted", img)
		}
	}
}

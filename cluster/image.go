package cluster

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Image is a container image made of a few static files, written as an
// OCI image-layout archive (the format `ctr images import` reads), so the
// cluster needs no registry and no image builder.
type Image struct {
	// Name is the reference the runtime knows it by, e.g.
	// "umd.local/pause:1"; pods name it with imagePullPolicy: Never.
	Name string
	// Files maps absolute paths in the image to host files copied in
	// (mode 0755: they are the image's programs).
	Files map[string]string
	// Entrypoint is the image's default command.
	Entrypoint []string
}

// OCI media types and the annotations an importer names an image by.
const (
	mediaIndex    = "application/vnd.oci.image.index.v1+json"
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
	annotRefName  = "org.opencontainers.image.ref.name"
	annotCtrName  = "io.containerd.image.name"
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// epoch is the time every file in an image carries, so that the same
// inputs make the same archive.
var epoch = time.Unix(0, 0).UTC()

// WriteArchive writes img as an OCI image-layout tar to w: one gzip layer
// holding img.Files (and the directories above them), its config, a
// manifest, and an index naming it img.Name.
func (img Image) WriteArchive(w io.Writer) error {
	if img.Name == "" || !strings.Contains(img.Name, ":") {
		return fmt.Errorf("image name %q: want repository:tag", img.Name)
	}
	layer, diffID, err := img.layer()
	if err != nil {
		return fmt.Errorf("image %s: %w", img.Name, err)
	}
	plat := platform{Architecture: runtime.GOARCH, OS: "linux"}
	config, err := json.Marshal(map[string]any{
		"architecture": plat.Architecture,
		"os":           plat.OS,
		"created":      epoch.Format(time.RFC3339),
		"config": map[string]any{
			"Entrypoint": img.Entrypoint,
			"Env":        []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{diffID}},
	})
	if err != nil {
		return err
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaManifest,
		"config":        blobDescriptor(mediaConfig, config),
		"layers":        []descriptor{blobDescriptor(mediaLayer, layer)},
	})
	if err != nil {
		return err
	}
	md := blobDescriptor(mediaManifest, manifest)
	md.Platform = &plat
	md.Annotations = map[string]string{annotCtrName: img.Name, annotRefName: img.Name}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaIndex,
		"manifests":     []descriptor{md},
	})
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	entries := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{blobPath(layer), layer},
		{blobPath(config), config},
		{blobPath(manifest), manifest},
	}
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: epoch}); err != nil {
			return err
		}
	}
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: 0o644, Size: int64(len(e.data)), ModTime: epoch}); err != nil {
			return err
		}
		if _, err := tw.Write(e.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// WriteArchiveFile is WriteArchive to a new file at path.
func (img Image) WriteArchiveFile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := img.WriteArchive(f); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// layer returns the gzip-compressed layer tar and the digest of the
// uncompressed tar (the image config's diff ID).
func (img Image) layer() (gz []byte, diffID string, err error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	paths := make([]string, 0, len(img.Files))
	for p := range img.Files {
		if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
			return nil, "", fmt.Errorf("file path %q in image: want a clean absolute path", p)
		}
		paths = append(paths, p)
	}
	sort.Strings(paths)
	dirs := map[string]bool{}
	for _, dir := range []string{"/tmp", "/etc", "/dev", "/proc", "/sys"} {
		if err := addDir(tw, dirs, dir); err != nil {
			return nil, "", err
		}
	}
	for _, p := range paths {
		if err := addDir(tw, dirs, path.Dir(p)); err != nil {
			return nil, "", err
		}
		data, err := os.ReadFile(img.Files[p])
		if err != nil {
			return nil, "", err
		}
		h := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(p, "/"), Mode: 0o755, Size: int64(len(data)), ModTime: epoch}
		if err := tw.WriteHeader(h); err != nil {
			return nil, "", err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(raw.Bytes())
	var out bytes.Buffer
	zw, err := gzip.NewWriterLevel(&out, gzip.BestSpeed)
	if err != nil {
		return nil, "", err
	}
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return out.Bytes(), "sha256:" + hex.EncodeToString(sum[:]), nil
}

// addDir writes dir and its parents as tar directory entries, once each.
func addDir(tw *tar.Writer, done map[string]bool, dir string) error {
	if dir == "/" || done[dir] {
		return nil
	}
	if err := addDir(tw, done, path.Dir(dir)); err != nil {
		return err
	}
	done[dir] = true
	mode := int64(0o755)
	if dir == "/tmp" {
		mode = 0o1777
	}
	return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(dir, "/") + "/", Mode: mode, ModTime: epoch})
}

func blobDescriptor(mediaType string, data []byte) descriptor {
	return descriptor{MediaType: mediaType, Digest: digest(data), Size: int64(len(data))}
}

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func blobPath(data []byte) string {
	return "blobs/sha256/" + strings.TrimPrefix(digest(data), "sha256:")
}

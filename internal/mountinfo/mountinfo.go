// Package mountinfo reads fields of the kernel's mount tables
// (/proc/mounts, /proc/self/mountinfo).
package mountinfo

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// Unescape undoes the octal escapes (\040 for a space, …) the kernel
// writes in mount table fields.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// A Mount is one line of a mountinfo file (proc(5)), the fields umd reads.
type Mount struct {
	Point  string // the mount point, unescaped
	FSType string // the filesystem type ("cgroup", "overlay", …)
	Dev    string // the mounted device's number as the kernel writes it, "MAJOR:MINOR"
}

// Read parses a mountinfo file (/proc/self/mountinfo). Lines too short to
// hold a mount point are skipped; FSType is empty where the line lacks
// the "-" separator.
func Read(path string) ([]Mount, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Mount
	sc := bufio.NewScanner(f)
	// Overlay mounts (container root filesystems) carry lowerdir lists
	// far beyond bufio's default 64 KiB line limit.
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root point options [optional…] - fstype source superoptions
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		m := Mount{Point: Unescape(fields[4]), Dev: fields[2]}
		for i := 5; i+1 < len(fields); i++ {
			if fields[i] == "-" {
				m.FSType = fields[i+1]
				break
			}
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

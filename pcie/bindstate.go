package pcie

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// A BindRecord is what a function was bound to before umd first moved
// it, kept in a state file (DefaultStateDir/BDF.json) so that Unbind in
// any later process can put it back. A second Bind keeps the first
// record: Unbind returns to where the function was before umd touched it.
type BindRecord struct {
	BDF            BDF       `json:"bdf"`
	Driver         string    `json:"driver"`          // "" for none
	DriverOverride string    `json:"driver_override"` // "" for none
	BoundTo        string    `json:"bound_to"`        // the driver Bind moved it to
	Time           time.Time `json:"time"`
}

func recordPath(dir string, b BDF) string { return filepath.Join(dir, b.String()+".json") }

// readRecord returns the function's record, or nil if it has none.
func readRecord(dir string, b BDF) (*BindRecord, error) {
	data, err := os.ReadFile(recordPath(dir, b))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the bind record: %w", err)
	}
	var r BindRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("bind record %s is garbled (remove it to start afresh): %w", recordPath(dir, b), err)
	}
	if r.BDF != b {
		return nil, fmt.Errorf("bind record %s is for %s (remove it to start afresh)", recordPath(dir, b), r.BDF)
	}
	return &r, nil
}

// writeRecord saves r atomically (a temporary file renamed into place).
func writeRecord(dir string, r BindRecord) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("making the bind state directory: %w", err)
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the bind record: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+r.BDF.String()+".*")
	if err != nil {
		return fmt.Errorf("writing the bind record: %w", err)
	}
	_, werr := tmp.Write(append(data, '\n'))
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("writing the bind record: %w", err)
	}
	if err := os.Rename(tmp.Name(), recordPath(dir, r.BDF)); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("writing the bind record: %w", err)
	}
	return nil
}

func forgetRecord(dir string, b BDF) error {
	if err := os.Remove(recordPath(dir, b)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing the bind record: %w", err)
	}
	return nil
}

// ReadBindRecord returns the state file umd keeps for b in dir (""
// means DefaultStateDir), or nil when umd has not moved b.
func ReadBindRecord(dir string, b BDF) (*BindRecord, error) {
	if dir == "" {
		dir = DefaultStateDir
	}
	return readRecord(dir, b)
}

// lockStateDir takes an exclusive lock on the state directory, so that
// two umd processes do not move the same functions at once; the lock
// goes when the returned function is called or the process ends.
func lockStateDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("making the bind state directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the bind lock: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("taking the bind lock: %w", err)
	}
	return func() { f.Close() }, nil
}

package compute

import (
	"bytes"
	"hash/crc32"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// Status fields the model completes commands with.
var (
	statusInvalidField     = nvmelike.StatusField(nvmelike.SCTGeneric, 0x02, true)
	statusInvalidNamespace = nvmelike.StatusField(nvmelike.SCTGeneric, 0x0b, true)
	statusLBAOutOfRange    = nvmelike.StatusField(nvmelike.SCTGeneric, 0x80, true)
)

// Install makes the software controller dev execute Checksum and Search
// (through sim.Controller.HandleIO). Neither handler allocates.
func Install(dev *sim.Controller) error {
	if err := dev.HandleIO(OpcodeChecksum, checksum); err != nil {
		return err
	}
	m := &model{}
	return dev.HandleIO(OpcodeSearch, m.search)
}

// blocks returns the namespace data a command's CDW10-12 name.
func blocks(r *sim.Request) (data []byte, shift uint, status uint16) {
	ns, shift, ok := r.Namespace(r.SQE.NSID())
	if !ok {
		return nil, 0, statusInvalidNamespace
	}
	slba := uint64(r.SQE.CDW(10)) | uint64(r.SQE.CDW(11))<<32
	nlb := uint64(r.SQE.CDW(12)&0xffff) + 1
	total := uint64(len(ns)) >> shift
	if slba >= total || nlb > total-slba {
		return nil, 0, statusLBAOutOfRange
	}
	return ns[slba<<shift : (slba+nlb)<<shift], shift, 0
}

func checksum(r *sim.Request) (uint32, uint16) {
	data, _, status := blocks(r)
	if status != 0 {
		return 0, status
	}
	return crc32.Checksum(data, castagnoli), 0
}

// model is the state of a software controller's handlers: the buffer a
// pattern is read into (handlers run under the controller's lock, one at
// a time).
type model struct {
	pattern [MaxPattern]byte
}

func (m *model) search(r *sim.Request) (uint32, uint16) {
	data, shift, status := blocks(r)
	if status != 0 {
		return 0, status
	}
	n := int(r.SQE.CDW(13))
	if n == 0 || n > MaxPattern {
		return 0, statusInvalidField
	}
	p := m.pattern[:n]
	if status := r.FromHost(p); status != 0 {
		return 0, status
	}
	bs := 1 << shift
	for i := 0; i < len(data); i += bs {
		if bytes.Contains(data[i:i+bs], p) {
			return searchFound | uint32(i>>shift), 0
		}
	}
	return 0, 0
}

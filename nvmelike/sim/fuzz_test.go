package sim_test

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// FuzzCommands sends the software controller arbitrary admin and I/O
// commands (raw data pointers included): it must never panic, and the host
// engine must survive whatever comes back.
func FuzzCommands(f *testing.F) {
	f.Add([]byte{0x06, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add(make([]byte, 80))
	f.Fuzz(func(t *testing.T, data []byte) {
		mem := sim.NewMemory()
		dev := sim.New(mem, sim.Config{MQES: 64, DoorbellBufferConfig: true, VolatileWriteCache: true, Namespaces: []sim.NamespaceConfig{{Blocks: 16}}})
		ctx := context.Background()
		c, err := nvmelike.Open(ctx, dev, mem, &nvmelike.Options{AdminTimeout: 20 * time.Millisecond, ShadowDoorbells: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		q, err := c.CreateQueuePair(ctx, nvmelike.QueueOptions{Depth: 8})
		if err != nil {
			t.Fatal(err)
		}
		buf, _ := mem.Alloc(16384, 4096)
		le := binary.LittleEndian
		for len(data) >= 40 {
			e := data[:40]
			data = data[40:]
			cmd := nvmelike.Command{
				Opcode: e[0],
				NSID:   uint32(e[1] & 3),
				CDW10:  le.Uint32(e[4:]),
				CDW11:  le.Uint32(e[8:]),
				CDW12:  le.Uint32(e[12:]),
				CDW13:  le.Uint32(e[16:]),
			}
			// Raw data pointers: into the buffer, past it, or anywhere.
			switch e[2] % 3 {
			case 0:
				cmd.PRP1 = buf.IOVA + uint64(le.Uint16(e[20:]))
				cmd.PRP2 = buf.IOVA + uint64(le.Uint16(e[22:]))
			case 1:
				cmd.PRP1 = le.Uint64(e[24:])
				cmd.PRP2 = le.Uint64(e[32:])
			}
			ectx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
			if e[3]&1 == 0 {
				_, _ = c.Admin(ectx, &cmd)
			} else {
				_, _ = q.Exec(ectx, &cmd)
			}
			cancel()
		}
	})
}

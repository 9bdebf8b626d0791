package nvmelike

import (
	"encoding/binary"
	"fmt"
)

// PRPs (physical region page entries) describe a data buffer to an NVMe
// controller as a list of memory pages:
//
//   - PRP1 is the buffer's first byte: any dword-aligned address.
//   - If the buffer ends in the page PRP1 is in, PRP2 is 0.
//   - If it ends in the next page, PRP2 is that page's address.
//   - Otherwise PRP2 points to a PRP list: the page-aligned addresses of the
//     second page on, 8 bytes each. When a list outgrows its page, the
//     page's last entry points to the next list page instead.
//
// Pages are of the memory page size set in CC.MPS, and are IOVA pages: the
// buffer is contiguous in IOVA space (a Buffer always is), so page k of the
// buffer is at its first page's IOVA + k×page size.

// prpListPages returns how many list pages a transfer of n bytes needs, at
// worst (starting at the last dword of a page), with pageSize pages.
func prpListPages(n, pageSize int) int {
	if n <= 0 {
		return 0
	}
	pages := (n+pageSize-1)/pageSize + 1 // +1: an unaligned start spans one more page
	entries := pages - 1                 // PRP1 covers the first
	if entries <= 1 {
		return 0 // PRP2 is the second page itself
	}
	perPage := pageSize / 8
	lists := 1
	for entries > perPage {
		entries -= perPage - 1 // all but the chain pointer
		lists++
	}
	return lists
}

// buildPRP returns the data pointer for buf and writes a PRP list into list
// (page-aligned, whole pages, preallocated per tracker) when buf spans more
// than two pages. It does not allocate.
func buildPRP(buf Buffer, pageSize int, list Buffer) (prp1, prp2 uint64, err error) {
	n := uint64(len(buf.Bytes))
	if n == 0 {
		return 0, 0, nil
	}
	iova := buf.IOVA
	if iova&3 != 0 {
		return 0, 0, ErrUnalignedBuffer
	}
	ps := uint64(pageSize)
	first := ps - iova&(ps-1) // bytes PRP1 covers
	if n <= first {
		return iova, 0, nil
	}
	next := iova + first // page aligned
	rest := n - first
	if rest <= ps {
		return iova, next, nil
	}
	entries := (rest + ps - 1) / ps
	w := newPRPWriter(list, ps, entries)
	if err := w.addRun(next, entries); err != nil {
		return 0, 0, err
	}
	return iova, list.IOVA, nil
}

// prpVectorOK reports whether PRPs can describe the data in bufs: every
// boundary between two buffers must fall on a memory page boundary (the
// first may start anywhere dword aligned, the last may end anywhere).
func prpVectorOK(bufs []Buffer, pageSize int) bool {
	mask := uint64(pageSize - 1)
	if bufs[0].IOVA&3 != 0 {
		return false
	}
	for i := range bufs {
		b := &bufs[i]
		if len(b.Bytes) == 0 ||
			(i > 0 && b.IOVA&mask != 0) ||
			(i < len(bufs)-1 && (b.IOVA+uint64(len(b.Bytes)))&mask != 0) {
			return false
		}
	}
	return true
}

// buildPRPVector is buildPRP for data in several buffers (at least one),
// which must meet at page boundaries (prpVectorOK). PRP1 is the first
// buffer's first byte; the pages after it, through every buffer, go into
// PRP2 or the PRP list. It does not allocate.
func buildPRPVector(bufs []Buffer, pageSize int, list Buffer) (prp1, prp2 uint64, err error) {
	if len(bufs) == 1 {
		return buildPRP(bufs[0], pageSize, list)
	}
	for i := range bufs {
		if len(bufs[i].Bytes) == 0 {
			return 0, 0, fmt.Errorf("buffer %d is empty: %w", i, ErrBadBuffers)
		}
	}
	if bufs[0].IOVA&3 != 0 {
		return 0, 0, ErrUnalignedBuffer
	}
	if !prpVectorOK(bufs, pageSize) {
		return 0, 0, ErrPRPBoundary
	}
	ps := uint64(pageSize)
	// The pages after PRP1's: the rest of the first buffer's, then all of
	// the others'.
	first := bufs[0].IOVA &^ (ps - 1)
	end := bufs[0].IOVA + uint64(len(bufs[0].Bytes))
	entries := (end-first+ps-1)/ps - 1
	for _, b := range bufs[1:] {
		entries += (uint64(len(b.Bytes)) + ps - 1) / ps
	}
	w := newPRPWriter(list, ps, entries)
	if entries == 1 {
		// The first buffer fits in its first page and the second in one
		// page: PRP2 is that page.
		return bufs[0].IOVA, bufs[1].IOVA, nil
	}
	if err := w.addRun(first+ps, (end-first+ps-1)/ps-1); err != nil {
		return 0, 0, err
	}
	for _, b := range bufs[1:] {
		if err := w.addRun(b.IOVA, (uint64(len(b.Bytes))+ps-1)/ps); err != nil {
			return 0, 0, err
		}
	}
	return bufs[0].IOVA, list.IOVA, nil
}

// prpWriter appends entries to a PRP list (list: whole pages), chaining
// list pages: the last slot of a full page points to the next page when
// more than one entry is left. left must start at the number of entries
// the caller will add.
type prpWriter struct {
	list       Buffer
	ps         uint64
	left       uint64 // entries still to add
	page, slot uint64
	pages      uint64 // list pages there are room for
}

func newPRPWriter(list Buffer, ps, entries uint64) prpWriter {
	return prpWriter{list: list, ps: ps, left: entries, pages: uint64(len(list.Bytes)) / ps}
}

// addRun adds n entries for the consecutive pages from addr on.
func (w *prpWriter) addRun(addr, n uint64) error {
	// Locals in the loop: it is the PRP path's per-page cost.
	b, ps, perPage, pages := w.list.Bytes, w.ps, w.ps/8, w.pages
	page, slot, left := w.page, w.slot, w.left
	var err error
	for ; n > 0; n-- {
		if slot == perPage-1 && left > 1 {
			// The last slot of a full page, with more to come: chain.
			if page+1 >= pages {
				err = ErrTransferTooLarge
				break
			}
			binary.LittleEndian.PutUint64(b[page*ps+slot*8:], w.list.IOVA+(page+1)*ps)
			page++
			slot = 0
		}
		if page >= pages {
			err = ErrTransferTooLarge
			break
		}
		binary.LittleEndian.PutUint64(b[page*ps+slot*8:], addr)
		slot++
		left--
		addr += ps
	}
	w.page, w.slot, w.left = page, slot, left
	return err
}

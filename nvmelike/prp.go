package nvmelike

import "encoding/binary"

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
	perPage := ps / 8
	capacity := uint64(len(list.Bytes)) / ps
	page := uint64(0) // current list page
	slot := uint64(0) // next free slot in it
	for i := uint64(0); i < entries; i++ {
		if slot == perPage-1 && entries-i > 1 {
			// Last slot of a full page with more to come: chain.
			if page+1 >= capacity {
				return 0, 0, ErrTransferTooLarge
			}
			binary.LittleEndian.PutUint64(list.Bytes[page*ps+slot*8:], list.IOVA+(page+1)*ps)
			page++
			slot = 0
		}
		if page >= capacity {
			return 0, 0, ErrTransferTooLarge
		}
		binary.LittleEndian.PutUint64(list.Bytes[page*ps+slot*8:], next+i*ps)
		slot++
	}
	return iova, list.IOVA, nil
}

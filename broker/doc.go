// Package broker lets several processes use umd devices at once: a Server
// owns the devices (opened with umd.Open) and gives each client connection
// on a unix socket its own resources; Dial is the client side.
//
// # What a client gets
//
// A connection may open one session on one device. For it the broker
//
//   - makes a hugepage pool (a sealed hugetlb memfd) of the size asked;
//   - maps it into the device's IOMMU domain through the device's
//     iommu.Space, at an IOVA window recorded in the ledger with
//     Owner{Name: "client PID", ID: connection id, Tag: BDF}, so a DMA
//     fault in it is attributed to the client;
//   - creates the I/O queue pairs asked for on the controller, each with
//     an MSI-X vector and eventfd of its own;
//   - sends the pool's fd and the eventfds (SCM_RIGHTS) with the Layout:
//     pool IOVA and size, queue IDs, depths and vectors, doorbell stride,
//     transfer limit, namespaces.
//
// When the connection ends, however the client ended (exit, crash,
// kill -9: the kernel closes its socket), the broker deletes its queue
// pairs (the controller aborts what they had outstanding), unmaps its IOVA
// window (the ledger keeps it as recently unmapped), closes its pool (the
// hugepages return once the client's mapping is gone too) and frees its
// vectors. Guest tests measure this at tens of milliseconds.
//
// # How a client does I/O (this slice: mediated)
//
// The client writes data into its pool and asks the broker for a command
// (Session.Read, Write, Flush: an "io" request naming a queue pair, the
// namespace, LBA, block count and pool offset). The broker builds the
// command itself, with the data buffer inside the client's window, submits
// it on the client's queue pair and replies with the completion status.
// The data moves by DMA straight between the device and the client's pool
// (no copy), but every command is a round trip over the socket, and only
// Read, Write and Flush are allowed. The eventfds are signalled on each of
// the client's completions; the broker itself completes by polling.
//
// Not done yet: the trusted mode, where the client maps BAR0 (from the
// VFIO device fd) and drives its queue pairs itself. It needs the queue
// rings in the client's pool and an nvmelike.QueuePair constructible over
// rings and doorbells it did not create; neither exists in this slice.
//
// # What is isolated
//
// Clients cannot name each other's memory: a mediated command's data is
// always inside the asking client's own window, so the device never reads
// or writes another client's pool on a client's behalf. All clients of a
// device share its IOMMU domain (one VFIO container), so isolation between
// them is the broker's validation, not hardware's.
//
// # Who may connect
//
// The socket's mode is the first gate. Each peer is identified by the
// kernel (SO_PEERCRED: pid, uid, gid at connect time) and may open a
// session on a device only if the device's Access allows its uid or
// primary gid (root is allowed unless DenyRoot). Quotas per client bound
// the queue pairs and pool bytes; the server bounds the connections. A
// peer not allowed on any device sees only itself in a status.
//
// # Protocol
//
// Each message is a frame: a 4-byte big-endian length, then that many
// bytes (at most MaxFrame) of JSON. JSON because the control path is rare
// and small, its fields are named (a field added later does not shift the
// others), and a malformed message is a decoding error, not a misread
// struct. Unknown fields and trailing data are refused; every field is
// range-checked before use. A client first says hello with its
// ProtocolVersion; a broker speaking another version answers with its own
// and an error matching ErrVersion. Then:
//
//	{"op":"list"}                                  → devices
//	{"op":"open","device":BDF,"queues":N,"depth":D,"pool_bytes":B}
//	                                               → layout + fds
//	{"op":"io","io":{"queue":Q,"opcode":"read","nsid":1,"lba":L,"blocks":K,"offset":O}}
//	                                               → status
//	{"op":"status"}                                → clients
//
// A failure is {"error":{"code":C,"message":M}}: the client library
// returns it as an *Error matching ErrBadRequest, ErrVersion,
// ErrPermission, ErrQuota, ErrNoDevice, ErrState or ErrDevice. A frame
// that does not decode gets one error and the connection is closed.
//
// The library never logs and never panics on client input; the daemon
// (cmd/umdd) logs.
package broker

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
// # How a client does I/O
//
// A session is mediated (the default) or trusted (Access.Trusted).
//
// Mediated: the client asks the broker for each command. Either by pool
// offset (Session.Read, Write, Flush: an "io" request naming a queue pair,
// the namespace, LBA, block count and pool offset; the broker builds the
// command), or as a command the client encoded itself, PRPs included
// (Session.Exec, a "cmd" request). The broker checks every field of a
// "cmd" before the device sees it: the opcode is Read, Write, Compare,
// Flush or Write Zeroes; the namespace exists and the LBA range is inside
// it; CDW12 sets only NLB, FUA, LR (and Deallocate for Write Zeroes),
// CDW14-15 are 0; every PRP entry lies inside the client's window, and
// a PRP list is read once, must fit in its page and must continue the
// buffer page by page. The broker then submits a command built from the
// checked range, whose PRPs (and PRP list, in the broker's own memory)
// the engine writes anew: what the device reads is what was checked,
// whatever the client writes into its pool afterwards. Data moves by DMA
// straight between the device and the client's pool, but every command
// is a round trip over the socket.
//
// Trusted: the broker places each queue pair's rings in a second shared
// memory (a sealed hugetlb memfd, mapped into the client's window too),
// creates the queues over them (nvmelike.Controller.CreateRemoteQueue)
// and sends, besides the pool and the eventfds, the rings and a duplicate
// of the VFIO device descriptor. The client maps BAR0 from it and attaches
// a *umd.QueuePair to each queue (umd.AttachQueuePair): the same type and
// I/O path as a local queue pair, with the broker off the I/O path. The
// broker still creates and deletes the queues, so a dead client's queues
// go as a mediated one's do.
//
// # What is isolated
//
// Clients cannot name each other's memory in mediated mode: every
// command's data is inside the asking client's own window, so the device
// never reads or writes another client's pool on a client's behalf. All
// clients of a device share its IOMMU domain (one VFIO container), so
// that isolation is the broker's validation, not hardware's.
//
// A trusted client is isolated from nothing: with the device descriptor
// it can write any register (reset the controller, ring other clients'
// doorbells) and point DMA at any IOVA of the domain, other clients' pools
// and the broker's memory included. Trust it as you would the broker.
//
// Hardware isolation needs separate IOMMU groups: an SR-IOV virtual
// function per client. Server.AddVFs serves the VFs of a physical
// function (package sriov) and Client.LeaseVF gives a client a whole VF:
// a controller of its own, opened in the client's own container, whose
// DMA the IOMMU confines to the client's mappings. When the connection
// ends the broker takes the VF's controller offline and online again
// through the PF, which stops its DMA, before leasing it again.
//
// When the broker goes away, Client.Done is closed. A trusted client must
// then stop its I/O and Close: the device stays busy (a new broker cannot
// open it) while any process holds its descriptor or a BAR mapping.
//
// # Who may connect
//
// The socket's mode is the first gate. Each peer is identified by the
// kernel (SO_PEERCRED: pid, uid, gid; SO_PEERGROUPS: supplementary
// groups; all as at connect time) and may open a session on a device only
// if the device's Access allows its uid or one of its groups (root is
// allowed unless DenyRoot); a trusted session also needs Access.Trusted.
// Quotas per client bound
// the queue pairs and pool bytes; the server bounds the connections. A
// peer not allowed on any device sees only itself in a status.
//
// # Reservations
//
// A reserver (a peer whose uid is in Config.Reservers; root by default),
// such as the Kubernetes DRA driver, may reserve a session's resources on
// a device under a claim before the claim's client exists
// (Client.Reserve): the queue pairs count against the device at once and
// the pool bytes against Config.MaxReservedBytes, so no later session or
// reservation can take them, and the broker answers with a grant, 128
// random bits in hex. Reserving the same claim, device and name (optional:
// one claim may hold several reservations of a device under different
// names) again returns the same grant; with other parameters it fails with
// ErrState.
//
// Client.OpenGrant opens exactly the reserved session, one at a time per
// grant; when its connection ends the session goes as any other and the
// grant opens again, until the claim is released. The grant is the
// capability: opening by grant does not consult the device's allow-list,
// so any peer that reaches the socket and knows the grant gets the
// session. Client.Release ends every session opened with the claim's
// grants (as a disconnect would), frees what the claim held and forgets
// it. Reservations live in the server's memory; a restarted broker has
// none.
//
// A reservation with mode ModeExclusive lends the whole device to the
// claim instead (exclusive.go): allowed only while no session and no
// other claim's reservation holds it (ErrState naming them), it makes the
// server close the device (umd.Device.Close: queues, interrupts, BAR
// mappings, VFIO descriptors) so that the claim's process can open it
// with umd.Open; the device list shows it lent (DeviceInfo.Lent) and
// refuses every other use. Releasing the claim opens it again with the
// options it was added with (Server.AddReopenable; a device added with
// AddDevice cannot be lent) and serves it; if that fails, the device is
// shown failed (DeviceInfo.Failed) with the reason, and the release says
// so. A simulated device is lent by bookkeeping alone.
//
// In a container prepared by the DRA driver, ClaimFromEnv reads the
// claim's environment (EnvSocket, EnvClaim, EnvMode and EnvDevicePrefix
// variables holding "<BDF>,<grant ID>").
//
// # Simulated devices
//
// Server.AddSimulated serves a software controller (nvmelike/sim) under a
// PCI address, for machines without VFIO: mediated sessions and
// reservations work as on a device (the client's pool is ordinary shared
// memory, and each command's data is copied between it and the
// controller's memory); trusted sessions are refused with ErrState.
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
//	{"op":"open","device":BDF,"queues":N,"depth":D,"pool_bytes":B,"mode":"trusted"}
//	                                               → layout + fds
//	{"op":"io","io":{"queue":Q,"opcode":"read","nsid":1,"lba":L,"blocks":K,"offset":O}}
//	                                               → status
//	{"op":"cmd","cmd":{"queue":Q,"opcode":2,"nsid":1,"cdw":[…6],"prp1":A,"prp2":B}}
//	                                               → status, dw0
//	{"op":"status"}                                → clients, reservations
//	{"op":"reserve","claim":C,"device":BDF,"queues":N,"depth":D,"pool_bytes":B,"mode":M,"polled":P}
//	                                               → grant
//	{"op":"open","device":BDF,"grant":G}           → layout + fds
//	{"op":"reserve","claim":C,"device":BDF,"mode":"exclusive"}
//	                                               → grant (not for opening)
//	{"op":"release","claim":C}                     → nothing
//
// A failure is {"error":{"code":C,"message":M}}: the client library
// returns it as an *Error matching ErrBadRequest, ErrVersion,
// ErrPermission, ErrQuota, ErrNoDevice, ErrState or ErrDevice. A frame
// that does not decode gets one error and the connection is closed.
//
// The library never logs and never panics on client input; the daemon
// (cmd/umdd) logs.
package broker

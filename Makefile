# umd — see README.md. Every target that needs host tools or guest kernels
# installs or fetches them first (as root; otherwise it prints the commands).

GO          ?= go
TOPOLOGY    ?= single
KERNEL      ?= 6.12
DRIVER      ?= vfio-pci
RUN         ?=
# Guest kernels `make test` runs the guest tests on.
TEST_KERNELS ?= 6.1 6.12
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

UMDVM := bin/umdvm
export TOPOLOGY KERNEL DRIVER RUN

.PHONY: all build test test-host test-guest test-cluster demo vm lint bench bench-compare deps fetch clean umdvm

all: build

# umdvm is rebuilt every time (go's cache makes that cheap), so it never
# runs stale.
umdvm:
	@command -v $(GO) >/dev/null || { echo "Go 1.26 or newer is needed: https://go.dev/doc/install" >&2; exit 1; }
	@$(GO) build -o $(UMDVM) ./qemu/umdvm

build: umdvm
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ ./cmd/...

deps: umdvm
	@$(UMDVM) deps

fetch: deps
	$(UMDVM) fetch

# Unit tests on the host, then the guest tests: the harness's own boot
# tests (tag vm), one boot per kernel with the `cards` topology running
# every guest test, a `numa` boot, `sriov` and `quirks` boots per kernel
# for the tests that need them, and a boot with the kernel's own nvme
# driver for the harness's checks.
test: test-host test-guest test-cluster

# The guest tests that know the quirks topology's controllers (zoned,
# metadata, one vector, one queue): most others take any controller for a
# plain one.
QUIRKS_TESTS = Quirks|TestGuestIdentify$$|TestOpenEveryController|TestGuestProbe

test-host: deps
	$(GO) test ./...

test-guest: deps
	@rc=0; \
	$(GO) test -tags vm ./qemu/ || rc=1; \
	for k in $(TEST_KERNELS); do \
		$(UMDVM) test -kernel $$k -topology cards || rc=1; \
	done; \
	$(UMDVM) test -kernel 6.12 -topology numa || rc=1; \
	for k in $(TEST_KERNELS); do \
		$(UMDVM) test -kernel $$k -topology sriov ./sriov/ ./vfio/ ./broker/ || rc=1; \
	done; \
	for k in $(TEST_KERNELS); do \
		$(UMDVM) test -kernel $$k -topology quirks -run '$(QUIRKS_TESTS)' . ./cmd/umdbench/ ./cmd/umdprobe/ || rc=1; \
	done; \
	$(UMDVM) test -kernel 6.1 -topology single -driver nvme ./qemu/... || rc=1; \
	exit $$rc

# A Kubernetes control plane and kubelets on this machine (package
# cluster, as root): cluster/build.sh builds etcd, Kubernetes, containerd
# and the CNI plugins from Go modules into ~/.cache/umd/cluster once (the
# first build is long), runc comes from Debian; then the tests run with
# the DRA driver, umdd simulating devices. See docs/kubernetes.md.
test-cluster:
	@[ "$$(id -u)" = 0 ] || { echo "make test-cluster runs kubelets and containerd: run it as root" >&2; exit 1; }
	@command -v runc >/dev/null || apt-get install -y runc || { apt-get update && apt-get install -y runc; }
	@bin=$$(bash cluster/build.sh) && \
	UMD_CLUSTER_BIN=$$bin $(GO) test -tags cluster -count=1 -v -timeout 30m ./cluster/

# make vm TOPOLOGY=cards KERNEL=6.1 RUN='ls /dev/vfio'
vm: deps
	@[ -n "$$RUN" ] || { echo "usage: make vm [TOPOLOGY=single|cards|numa] [KERNEL=6.1|6.12] [DRIVER=vfio-pci|nvme] RUN='command'" >&2; exit 2; }
	@$(UMDVM) run -topology "$$TOPOLOGY" -kernel "$$KERNEL" -driver "$$DRIVER" -- "$$RUN"

demo: deps
	@$(UMDVM) run -topology cards -kernel "$$KERNEL" -script qemu/demo.sh

lint: umdvm
	@out=$$(gofmt -l .); [ -z "$$out" ] || { echo "gofmt needed:"; echo "$$out"; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags guest ./...
	$(GO) vet -tags vm ./qemu/
	$(GO) vet -tags cluster ./cluster/...
	$(GO) run $(STATICCHECK) ./...
	$(GO) run $(STATICCHECK) -tags guest ./...
	$(GO) run $(STATICCHECK) -tags cluster ./cluster/...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# umdbench (vfio-pci, polled and interrupts) against fio (the kernel's
# nvme driver: io_uring, io_uring polled, libaio) in one boot of the
# `single` topology, one table with the ratios and doorbell writes per
# I/O; a few minutes, not part of `make test`. See docs/performance.md.
BENCH_KERNEL ?= 6.1
BENCH_ARGS   ?=
bench-compare: deps
	@$(UMDVM) deps -with fio
	@$(UMDVM) bench-compare -kernel $(BENCH_KERNEL) -topology single $(BENCH_ARGS)

clean:
	rm -rf bin

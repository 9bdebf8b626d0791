module github.com/umdkit/umd

go 1.26.0

require (
	github.com/cilium/ebpf v0.22.0
	github.com/u-root/u-root v0.16.0
	golang.org/x/sys v0.49.0
)

#!/usr/bin/env bash
# Builds the control plane umd's cluster tests run on, from Go modules,
# into a cache outside git (UMD_CLUSTER_CACHE, default
# ~/.cache/umd/cluster/<versions>). Nothing here is downloaded as a
# binary: Kubernetes' commands are built from a small wrapper module that
# pins k8s.io/kubernetes and points its staging modules (listed as
# v0.0.0 in its go.mod) at the matching published versions.
#
#   cluster/build.sh            build what is missing, print the bin dir
#
# Versions: Kubernetes 1.34 is the newest whose kubelet still runs on a
# cgroup v1 host without extra configuration (these machines mount v1).
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.34.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.1.5}
CNI_VERSION=${CNI_VERSION:-v1.6.2}
GO=${GO:-go}

cache=${UMD_CLUSTER_CACHE:-$HOME/.cache/umd/cluster}
bin=$cache/bin-$K8S_VERSION-$ETCD_VERSION-$CONTAINERD_VERSION-$CNI_VERSION
src=$cache/src
mkdir -p "$bin" "$src"

log() { echo "cluster/build: $*" >&2; }

# need OUT: whether $bin/OUT is still to be built (a warm cache then runs
# no go command at all).
need() { [ ! -x "$bin/$1" ]; }

# wrapper DIR MODULE VERSION [extra go.mod lines...]: a module that requires
# MODULE@VERSION, so `go build MODULE/cmd/...` resolves with MODULE's own
# requirements.
wrapper() {
	local dir=$1 mod=$2 ver=$3
	mkdir -p "$dir"
	if [ ! -f "$dir/go.mod" ]; then
		{
			echo "module umd.local/clusterbuild"
			echo
			echo "go 1.24"
			echo
			echo "require $mod $ver"
		} >"$dir/go.mod"
		echo 'package clusterbuild' >"$dir/doc.go"
	fi
}

build() { # build DIR OUT PKG [go build flags...]
	local dir=$1 out=$2 pkg=$3
	shift 3
	if [ -x "$bin/$out" ]; then return; fi
	log "building $out ($pkg)"
	(cd "$dir" && CGO_ENABLED=${CGO_ENABLED:-0} "$GO" build -trimpath "$@" -o "$bin/$out.tmp" "$pkg")
	mv "$bin/$out.tmp" "$bin/$out"
}

# Kubernetes: staging modules are v0.<minor>.<patch> of the same release.
# The version is stamped as Kubernetes' own build does (else nodes report
# v0.0.0-master).
k8s=$src/kubernetes-$K8S_VERSION
k8s_minor=${K8S_VERSION#v1.}
k8s_minor=${k8s_minor%%.*}
k8s_ldflags=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	k8s_ldflags="$k8s_ldflags -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$k8s_minor -X $p.gitTreeState=clean"
done
if need kube-apiserver || need kube-controller-manager || need kube-scheduler || need kubelet || need kubectl; then
	if [ ! -f "$k8s/go.sum" ]; then
		wrapper "$k8s" k8s.io/kubernetes "$K8S_VERSION"
		staging=v0.${K8S_VERSION#v1.}
		modfile=$(cd "$k8s" && "$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
		for m in $(sed -n 's/^\s*\(k8s\.io\/[a-z0-9-]*\) v0\.0\.0$/\1/p' "$modfile"); do
			echo "replace $m => $m $staging" >>"$k8s/go.mod"
		done
		(cd "$k8s" && "$GO" get "k8s.io/kubernetes@$K8S_VERSION" && "$GO" mod tidy >/dev/null 2>&1 || true)
	fi
	for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
		need "$c" || continue
		(cd "$k8s" && "$GO" get "k8s.io/kubernetes/cmd/$c@$K8S_VERSION" >/dev/null 2>&1 || true)
		build "$k8s" "$c" "k8s.io/kubernetes/cmd/$c" -ldflags "$k8s_ldflags"
	done
fi

etcd=$src/etcd-$ETCD_VERSION
if need etcd; then
	wrapper "$etcd" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
	(cd "$etcd" && "$GO" get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 || true)
	build "$etcd" etcd go.etcd.io/etcd/server/v3
fi

ctrd=$src/containerd-$CONTAINERD_VERSION
wrapper "$ctrd" github.com/containerd/containerd/v2 "$CONTAINERD_VERSION"
for c in containerd containerd-shim-runc-v2 ctr; do
	need "$c" || continue
	(cd "$ctrd" && "$GO" get "github.com/containerd/containerd/v2/cmd/$c@$CONTAINERD_VERSION" >/dev/null 2>&1 || true)
	build "$ctrd" "$c" "github.com/containerd/containerd/v2/cmd/$c" -tags "no_btrfs no_devmapper no_zfs no_aufs"
done

cni=$src/cni-$CNI_VERSION
wrapper "$cni" github.com/containernetworking/plugins "$CNI_VERSION"
for c in bridge host-local loopback portmap; do
	need "cni/$c" || continue
	case $c in host-local) p=plugins/ipam/host-local ;; portmap) p=plugins/meta/portmap ;; *) p=plugins/main/$c ;; esac
	(cd "$cni" && "$GO" get "github.com/containernetworking/plugins/$p@$CNI_VERSION" >/dev/null 2>&1 || true)
	build "$cni" "cni/$c" "github.com/containernetworking/plugins/$p"
done

echo "$bin"

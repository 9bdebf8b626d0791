// Package cluster starts a real Kubernetes cluster on this machine for
// umd's tests of its DRA driver, with no Docker, no kind and no registry:
//
//   - [Start] makes a certificate authority and every certificate in Go,
//     and starts etcd, kube-apiserver, kube-controller-manager and
//     kube-scheduler on 127.0.0.1 with free ports, everything under one
//     work directory; it also builds the pause and test images (static Go
//     programs packed as OCI archives by [Image]).
//   - [Cluster.AddNode] starts a node: its own containerd (CRI with CDI
//     from the node's spec dir, runc, a CNI bridge of its own), the images
//     imported, its own kubelet (root dir, ports, cgroup root, name), and,
//     given a pcie snapshot, umdd serving simulated controllers for it and
//     umd-dra publishing them. Several nodes share the machine.
//   - [Cluster.Stop] (and [Clean], for `umdcluster down` after a crash)
//     leaves nothing behind: process groups, pods' processes by cgroup,
//     containerd's shims, mounts, cgroups, the bridges, the kubelet's log
//     links, the kubelets' shared device-plugin socket and the directories
//     they made for it, the Node objects ([Node.Stop]).
//
// The binaries come from cluster/build.sh, which builds them from Go
// modules into a cache outside git ([FindBinaries]). The kubelet refuses a
// loopback node IP, so kubelets register and serve on the machine's first
// global IPv4 address; everything else listens on loopback.
//
// The tests (build tag cluster, as root: `make test-cluster`) run on one
// cluster per `go test` run. Command umdcluster keeps one up for humans.
// docs/kubernetes.md shows it at work.
package cluster

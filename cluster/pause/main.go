// Command pause is the cluster tests' pod sandbox image: it holds a pod's
// namespaces by doing nothing until it is told to stop (SIGTERM or
// SIGINT), then exits 0. It is built static and packed into an image by
// package cluster, so the tests need no registry.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}

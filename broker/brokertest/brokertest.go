// Package brokertest runs a broker.Server for the tests of programs built
// on package broker.
package brokertest

import (
	"testing"

	"github.com/umdkit/umd/broker"
)

// Serve makes s listen on its socket and serve in the background until
// the test ends, when it closes s (which ends Serve) and reports an error
// of either on t. If s cannot listen, Serve closes it and fails t.
func Serve(t testing.TB, s *broker.Server) {
	t.Helper()
	if err := s.Listen(); err != nil {
		s.Close()
		t.Fatalf("broker: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("closing the broker: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("broker: Serve: %v", err)
		}
	})
}

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
	stop, err := s.Start()
	if err != nil {
		t.Fatalf("broker: %v", err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("broker: %v", err)
		}
	})
}

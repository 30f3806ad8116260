// Package faults proves the service's promises under faults: the real
// server binary against a real PostgreSQL under kill -9, database outages,
// contention storms and overload, each followed by an audit. Quick versions
// run in make test; SOAK=1 (make soak) runs the long ones.
package faults

import (
	"testing"

	"merch/bench/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// Package bench holds cross-package benchmarks and the fault harness:
//
//   - bench/faults: the real server binary against a real PostgreSQL under
//     kill -9, database outages, contention storms and overload, with an
//     audit after each (quick versions in make test, long in make soak);
//   - benchmarks (go test -bench) that need more than one package.
//
// See README.md in this directory for the figures of the last run.
package bench

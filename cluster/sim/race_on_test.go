//go:build race

package sim

// The race detector slows the single-goroutine simulation about tenfold
// without finding anything a plain run would not (each run is one
// goroutine); under -race the default run is smaller.
const raceEnabled = true

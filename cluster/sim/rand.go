package sim

import (
	"math/rand/v2"
	"time"
)

// Rand is the simulation's only source of randomness: a PCG generator
// seeded from the run's seed.
type Rand struct {
	r *rand.Rand
}

// NewRand returns the generator for seed.
func NewRand(seed uint64) *Rand {
	return &Rand{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// Fork returns an independent generator derived from this one, so that a
// part of the simulation (say, the workload) can draw numbers without
// shifting the draws of another part when its own use changes.
func (r *Rand) Fork() *Rand {
	return &Rand{r: rand.New(rand.NewPCG(r.r.Uint64(), r.r.Uint64()))}
}

// Uint64 returns a uniform 64-bit value.
func (r *Rand) Uint64() uint64 { return r.r.Uint64() }

// Intn returns a uniform value in [0, n); n <= 0 gives 0.
func (r *Rand) Intn(n int) int {
	if n <= 0 {
		return 0
	}
	return r.r.IntN(n)
}

// Between returns a uniform value in [lo, hi].
func (r *Rand) Between(lo, hi int) int {
	if hi <= lo {
		return lo
	}
	return lo + r.r.IntN(hi-lo+1)
}

// Chance returns true with probability p.
func (r *Rand) Chance(p float64) bool {
	if p <= 0 {
		return false
	}
	return r.r.Float64() < p
}

// Float64 returns a uniform value in [0, 1).
func (r *Rand) Float64() float64 { return r.r.Float64() }

// Duration returns a uniform duration in [lo, hi].
func (r *Rand) Duration(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(r.r.Int64N(int64(hi-lo)+1))
}

// Pick returns a uniform element of xs (the zero value for none).
func Pick[T any](r *Rand, xs []T) T {
	var zero T
	if len(xs) == 0 {
		return zero
	}
	return xs[r.Intn(len(xs))]
}

// Shuffle permutes xs in place.
func Shuffle[T any](r *Rand, xs []T) {
	r.r.Shuffle(len(xs), func(i, j int) { xs[i], xs[j] = xs[j], xs[i] })
}

package actors

import (
	"cmp"
	"maps"
	"slices"
)

// sortedKeys returns m's keys in increasing order. Loops that send
// messages while walking a map walk it in this order instead of Go's random
// one, so that what a node sends, and in which order, is a function of its
// state alone: a deterministic simulator (cluster/sim) replays a run byte
// for byte only if the order of sends does not change from run to run.
func sortedKeys[K cmp.Ordered, V any](m map[K]V) []K {
	if len(m) == 0 {
		return nil
	}
	return slices.Sorted(maps.Keys(m))
}

//go:build raftor_mutation

package core

import (
	"os"
	"strings"
)

// With the raftor_mutation build tag the simulator's mutation check can
// re-introduce known Raft bugs, to prove that its invariants catch them.
// RAFTOR_MUTATION is a comma-separated list of mutation names:
//
//	figure8       commit by counting replicas of an entry of any term
//	vote_persist  send vote replies before the vote is durable
//	self_durable  count the leader's own entries before they are durable
//	stale_read    answer read index without a quorum heartbeat round
var (
	mutationFigure8     = mutationEnabled("figure8")
	mutationVotePersist = mutationEnabled("vote_persist")
	mutationSelfDurable = mutationEnabled("self_durable")
	mutationStaleRead   = mutationEnabled("stale_read")
)

func mutationEnabled(name string) bool {
	for _, m := range strings.Split(os.Getenv("RAFTOR_MUTATION"), ",") {
		if strings.TrimSpace(m) == name {
			return true
		}
	}
	return false
}

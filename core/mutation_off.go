//go:build !raftor_mutation

package core

// Mutation switches, all off in normal builds: the compiler removes the code
// they guard. Build with -tags raftor_mutation to let RAFTOR_MUTATION turn
// them on (see mutation_on.go).
const (
	// mutationFigure8 commits by counting replicas of an entry of any term,
	// the bug of the Raft paper's figure 8.
	mutationFigure8 = false
	// mutationVotePersist sends vote replies before the vote is durable.
	mutationVotePersist = false
	// mutationSelfDurable counts the leader's own entries toward a quorum
	// before they are durable (PITFALLS #3).
	mutationSelfDurable = false
	// mutationStaleRead answers read index without confirming leadership
	// with a quorum.
	mutationStaleRead = false
)

package clustertest

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/raftor/raftor/actors"
)

// retriable errors of an administrative request: it did not happen, or it
// may be asked again safely.
func retriable(err error) bool {
	for _, e := range []error{actors.ErrNotLeader, actors.ErrTimeout, actors.ErrChangeInProgress,
		actors.ErrTransferInProgress, actors.ErrUnknownOutcome, actors.ErrNoQuorum, actors.ErrStopped, actors.ErrAborted} {
		if errors.Is(err, e) {
			return true
		}
	}
	return errors.Is(err, ErrNodeDown)
}

// onLeader runs f on the current leader until it succeeds, fails for good,
// or ctx ends. Membership changes are idempotent, so asking again after an
// unknown outcome is safe.
func (c *Cluster) onLeader(ctx context.Context, what string, f func(leader *actors.Node) error) error {
	var last error
	for {
		id, err := c.Leader(ctx)
		if err != nil {
			return fmt.Errorf("clustertest: %s: %w (last error: %v)", what, err, last)
		}
		r := c.Node(id).Raft()
		if r == nil {
			last = ErrNodeDown
			continue
		}
		last = f(r)
		if last == nil {
			return nil
		}
		if !retriable(last) {
			return fmt.Errorf("clustertest: %s: %w", what, last)
		}
		if !sleepCtx(ctx, c.opts.TickInterval) {
			return fmt.Errorf("clustertest: %s: %w", what, last)
		}
	}
}

// Voters returns the leader's voters (both halves of a joint configuration).
func (c *Cluster) Voters(ctx context.Context) ([]uint64, error) {
	id, err := c.Leader(ctx)
	if err != nil {
		return nil, err
	}
	m := c.Node(id).Metrics().GetMembership()
	return slices.Clone(m.GetVoters()), nil
}

// AddLearner adds the running node id as a learner, through the leader, and
// returns once it caught up.
func (c *Cluster) AddLearner(ctx context.Context, id uint64) error {
	addr := c.Node(id).Address()
	return c.onLeader(ctx, fmt.Sprintf("add learner %d", id), func(l *actors.Node) error {
		return l.AddLearner(ctx, id, addr)
	})
}

// ChangeVoters makes voters the exact set of voters, through the leader.
func (c *Cluster) ChangeVoters(ctx context.Context, voters []uint64) error {
	return c.onLeader(ctx, fmt.Sprintf("change voters to %v", voters), func(l *actors.Node) error {
		return l.ChangeMembership(ctx, voters)
	})
}

// AddNode starts a new node, adds it as a learner, waits for it to catch up
// and promotes it to voter. It returns the new node's ID.
func (c *Cluster) AddNode(ctx context.Context) (uint64, error) {
	n, err := c.StartNode()
	if err != nil {
		return 0, err
	}
	if err := c.AddLearner(ctx, n.id); err != nil {
		return n.id, err
	}
	voters, err := c.Voters(ctx)
	if err != nil {
		return n.id, err
	}
	if !slices.Contains(voters, n.id) {
		voters = append(voters, n.id)
	}
	return n.id, c.ChangeVoters(ctx, voters)
}

// RemoveNode removes node id from the voters (or the learners) and stops it
// for good once the change committed. Removing the leader makes it step
// down.
func (c *Cluster) RemoveNode(ctx context.Context, id uint64) error {
	lid, err := c.Leader(ctx)
	if err != nil {
		return err
	}
	m := c.Node(lid).Metrics().GetMembership()
	switch {
	case slices.Contains(m.GetLearners(), id):
		err = c.onLeader(ctx, fmt.Sprintf("remove learner %d", id), func(l *actors.Node) error {
			return l.RemoveLearner(ctx, id)
		})
	default:
		voters := slices.DeleteFunc(slices.Clone(m.GetVoters()), func(v uint64) bool { return v == id })
		err = c.ChangeVoters(ctx, voters)
	}
	if err != nil {
		return err
	}
	n := c.Node(id)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopLocked(stateRemoved)
	n.state = stateRemoved
	return nil
}

// TransferLeader hands leadership to target, through the leader.
func (c *Cluster) TransferLeader(ctx context.Context, target uint64) error {
	return c.onLeader(ctx, fmt.Sprintf("transfer leadership to %d", target), func(l *actors.Node) error {
		if l.ID() == target {
			return nil
		}
		return l.TransferLeader(ctx, target)
	})
}

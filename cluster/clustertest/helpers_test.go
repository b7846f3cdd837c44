//go:build !race

package clustertest_test

import (
	"context"
	"testing"
	"time"

	"github.com/raftor/raftor/cluster/clustertest"
)

// bound gives a scenario its own deadline: every wait inside it ends by
// then, whatever happens.
func bound(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// put writes through via, retrying refusals and unknown outcomes (each
// attempt is its own operation in the history) until it is acknowledged.
func put(t *testing.T, ctx context.Context, c *clustertest.Cluster, via uint64, key, value string) {
	t.Helper()
	var err error
	for ctx.Err() == nil {
		opCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err = c.Put(opCtx, via, key, value)
		cancel()
		if err == nil {
			return
		}
		if l, lerr := c.Leader(ctx); lerr == nil {
			via = l
		}
	}
	c.Fatalf("put %s=%s: %v", key, value, err)
}

// get reads key through via, retrying until a read succeeds.
func get(t *testing.T, ctx context.Context, c *clustertest.Cluster, via uint64, key string) (string, bool) {
	t.Helper()
	var err error
	for ctx.Err() == nil {
		opCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		var v string
		var ok bool
		v, ok, err = c.Get(opCtx, via, key)
		cancel()
		if err == nil {
			return v, ok
		}
	}
	c.Fatalf("get %s through %d: %v", key, via, err)
	return "", false
}

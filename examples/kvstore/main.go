// Command kvstore is Raftor's main example: a replicated key-value service.
//
// With no flags it will start an in-process three-node cluster (three actor
// systems talking over protoactor remote on 127.0.0.1, Pebble under
// ./data/kvstore/node-N) and serve an HTTP API on each node. The node runtime
// (actors/, remote/) that it runs on is not built yet, so for now it only
// says what it will do and exits.
package main

import (
	"flag"
	"fmt"
	"os"
)

const plan = `kvstore: a replicated key-value service on Raftor.

Not runnable yet: the node runtime (actors/ and remote/) is still being built.
When it is, this command will:
  1. start three Raft nodes in this process, each in its own protoactor
     actor system talking over remote on 127.0.0.1, with Pebble data under
     ./data/kvstore/node-1 .. node-3;
  2. elect a leader and print the HTTP address of every node;
  3. serve PUT/GET/DELETE /kv/{key}, POST /kv/{key}/cas, GET /status and
     GET /metrics on each node until interrupted.
What exists today: the protocol (messages/), and the Raft decision code
(core/, replication/), storage (store/) and simulator (cluster/sim) as they
land. Run the tests with: make test
`

func main() {
	fs := flag.NewFlagSet("kvstore", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == flag.ErrHelp {
			fmt.Print(plan)
			os.Exit(0)
		}
		os.Exit(2)
	}
	fmt.Print(plan)
}

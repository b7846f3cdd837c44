//go:build race

package main

// The pinned protoactor's Remote.Start rewrites gRPC's global logger, which
// the race detector reports when a second remote starts in one process (see
// the Makefile). Under -race the smoke test therefore runs the in-process
// mode only and skips the floor, which starts two remotes.
const raceEnabled = true

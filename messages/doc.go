// Package messages holds Raftor's protocol: the log records, the RPCs between
// nodes, the requests that application actors send to a node, and the
// messages between the actors of one node. The .proto files are the source;
// the .pb.go files are generated and committed.
//
// Regenerate with `go generate ./messages` (or `make proto`), which needs
// protoc on the PATH; protoc-gen-go is pinned as a tool in go.mod.
package messages

//go:generate bash gen.sh

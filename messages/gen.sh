#!/usr/bin/env bash
# Regenerates the .pb.go files from the .proto files in this folder, or
# writes them to the folder given as the first argument (the drift check
# uses that). protoc comes from the system (Debian: protobuf-compiler);
# protoc-gen-go is the version pinned as a tool in go.mod.
set -euo pipefail
cd "$(dirname "$0")"
out=${1:-.}
command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
protoc --plugin=protoc-gen-go="$bin/protoc-gen-go" \
  --go_out="$out" --go_opt=paths=source_relative \
  -I . *.proto

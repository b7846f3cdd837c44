package main

import (
	"os"
	"syscall"
)

// fdatasync is what etcd's WAL, bbolt and Pebble call on Linux.
func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }

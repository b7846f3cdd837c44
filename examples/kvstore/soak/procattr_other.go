//go:build unix && !linux

package main

import "syscall"

// procAttr puts a node in a process group of its own. Outside Linux there
// is no parent-death signal: a soak that is itself killed with SIGKILL
// leaves its nodes running (a normal end, a failure or Ctrl-C kills them).
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

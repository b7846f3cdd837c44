package main

import "syscall"

// procAttr puts a node in a process group of its own and has the kernel
// kill it when the soak dies, even by SIGKILL, so that no node outlives
// the run that started it.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

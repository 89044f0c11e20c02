//go:build !linux

package testenv

import "os/exec"

// DieWithParent does nothing here: only Linux has a parent-death signal.
func DieWithParent(*exec.Cmd) {}

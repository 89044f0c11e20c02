package testenv

import (
	"os/exec"
	"syscall"
)

// DieWithParent has the kernel send cmd SIGTERM if the test binary dies
// before its cleanup runs (a killed test run would otherwise leave daemons
// behind). Call it before cmd.Start.
func DieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}

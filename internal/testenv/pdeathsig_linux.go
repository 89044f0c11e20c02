package testenv

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel stop cmd if the test binary dies before its
// cleanup runs (a killed test run would otherwise leave daemons behind).
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}

package main

import "testing"

func TestUDPSockets(t *testing.T) {
	for _, c := range []struct{ procs, want int }{
		{1, 1}, // one reader: one socket, whole batches
		{2, minUDPSockets},
		{3, minUDPSockets},
		{minUDPSockets, minUDPSockets},
		{16, 16},
	} {
		if got := udpSockets(c.procs); got != c.want {
			t.Errorf("udpSockets(%d) = %d, want %d", c.procs, got, c.want)
		}
	}
}

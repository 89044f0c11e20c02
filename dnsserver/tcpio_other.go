//go:build !linux

package dnsserver

import "net"

// rawTCP is Linux only; elsewhere connections are read and written as
// net.Conn.
type rawTCP struct{}

func newRawTCP(net.Conn) *rawTCP { return nil }

func (c *tcpConn) read(p []byte) (int, error) { return c.nc.Read(p) }

func (c *tcpConn) write(p []byte) error {
	_, err := c.nc.Write(p)
	return err
}

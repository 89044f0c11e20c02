//go:build !linux

package dnsserver

import (
	"net"
)

func (s *Server) udpReader(pc net.PacketConn) error {
	return s.udpReaderPortable(pc)
}

// ListenUDP opens one UDP socket on addr, whatever n: SO_REUSEPORT load
// spreading is implemented for Linux only.
func ListenUDP(addr string, _ int) ([]net.PacketConn, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	return []net.PacketConn{pc}, nil
}

package dnsserver

import (
	"errors"
	"net"
	"net/netip"
)

// udpReaderPortable answers one packet at a time through ReadFrom and
// WriteTo: for PacketConns that are not *net.UDPConn, and systems without
// recvmmsg.
func (s *Server) udpReaderPortable(pc net.PacketConn) error {
	in := make([]byte, 4096)
	out := make([]byte, 0, 4096)
	var sc scratch
	for {
		n, addr, err := pc.ReadFrom(in)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		ix := s.ix.Load()
		reply := s.answerPacket(ix, in[:n], out[:0], &sc, netPeer{addr})
		if reply == nil {
			continue
		}
		if _, err := pc.WriteTo(reply, addr); errors.Is(err, net.ErrClosed) {
			return nil
		}
	}
}

// answerPacket is the packet edge for one UDP query: fast path, else full
// path, and a recover that turns a bug into SERVFAIL. from is only read on
// the full path.
func (s *Server) answerPacket(ix *index, pkt, buf []byte, sc *scratch, from peer) (out []byte) {
	defer func() {
		if v := recover(); v != nil {
			out = s.recovered(v, pkt, buf[:0])
		}
	}()
	if out = ix.fast.reply(pkt, buf[:0], sc); out != nil {
		return out
	}
	return s.handleRaw(ix, pkt, buf[:0], from)
}

// netPeer is the sender as ReadFrom reports it.
type netPeer struct{ addr net.Addr }

func (p netPeer) addrPort() netip.AddrPort { return addrPort(p.addr) }

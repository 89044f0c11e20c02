package dnsserver

import (
	"errors"
	"net"
	"net/netip"
	"time"
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
		sc.now = time.Now()
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
// path, then rate limiting, and a recover that turns a bug into SERVFAIL.
// It returns nil to send nothing. sc.now is the time the packet arrived
// (time.Now if zero).
func (s *Server) answerPacket(ix *index, pkt, buf []byte, sc *scratch, from peer) (out []byte) {
	defer func() {
		if v := recover(); v != nil {
			out = s.recovered(v, pkt, buf[:0])
		}
	}()
	now := sc.clock()
	var ap netip.AddrPort
	if from != nil {
		ap = from.addrPort()
	}
	cl := newSender(ap, now, s.edns.Load())
	if out = ix.fast.replyTo(pkt, buf[:0], sc, &cl); out == nil {
		out = s.handleRawFrom(ix, pkt, buf[:0], from, &cl)
	}
	if out == nil || cl.cookieOK {
		return out // a valid server cookie proves the address: no limit
	}
	switch s.rrl.account(out, cl.addr, cl.wildcard, now) {
	case rrlDrop:
		return nil
	case rrlSlip:
		return slipReply(out)
	}
	return out
}

// netPeer is the sender as ReadFrom reports it.
type netPeer struct{ addr net.Addr }

func (p netPeer) addrPort() netip.AddrPort { return addrPort(p.addr) }

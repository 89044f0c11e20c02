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
		sc.tally.flush(&s.stats, transportUDP)
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
	var z *zoneStats
	qtype := uint16(0)
	if out = ix.fast.replyTo(pkt, buf[:0], sc, &cl); out != nil {
		z, qtype = s.stats.edgeZone(sc.zone), sc.qtype
	} else if out = s.handleRawFrom(ix, pkt, buf[:0], from, &cl); out != nil {
		z, qtype = ix.statsZone(&s.stats, pkt)
	}
	if out == nil {
		return nil
	}
	sc.tally.count(transportUDP, z, qtype, out[3], len(out))
	if cl.cookieOK {
		return out // a valid server cookie proves the address: no limit
	}
	switch s.rrl.account(out, cl.addr, cl.wildcard, now) {
	case rrlDrop:
		sc.tally.dropped++
		return nil
	case rrlSlip:
		sc.tally.slipped++
		return slipReply(out)
	}
	return out
}

// netPeer is the sender as ReadFrom reports it.
type netPeer struct{ addr net.Addr }

func (p netPeer) addrPort() netip.AddrPort { return addrPort(p.addr) }

package main

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
)

// leanClient performs TLS 1.3 handshakes (TLS_AES_128_GCM_SHA256, X25519)
// as cheaply as a client can while still making the server do all of its
// work, down to checking the client's Finished: it reuses one key share for
// every connection and checks nothing the server sends. On a two-core
// machine the load generator shares the CPU with the server, and a
// crypto/tls client spends more per handshake than the server it measures,
// which hides the servers' differences; this one spends a fraction.
//
// It is a load generator and nothing else: it authenticates no one.
type leanClient struct {
	priv  *ecdh.PrivateKey
	hello []byte // the ClientHello handshake message
}

func newLeanClient(sni string, alpn []string, tickets bool) (*leanClient, error) {
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	var ext []byte
	ext = appendExt(ext, 0x0000, func(b []byte) []byte { // server_name
		return appendU16Vec(b, func(b []byte) []byte {
			b = append(b, 0)
			return appendU16Vec(b, func(b []byte) []byte { return append(b, sni...) })
		})
	})
	ext = appendExt(ext, 0x000a, func(b []byte) []byte { // supported_groups: x25519
		return appendU16Vec(b, func(b []byte) []byte { return append(b, 0x00, 0x1d) })
	})
	ext = appendExt(ext, 0x000d, func(b []byte) []byte { // signature_algorithms
		return appendU16Vec(b, func(b []byte) []byte {
			return append(b, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01) // ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256
		})
	})
	if len(alpn) > 0 {
		ext = appendExt(ext, 0x0010, func(b []byte) []byte {
			return appendU16Vec(b, func(b []byte) []byte {
				for _, p := range alpn {
					b = append(b, byte(len(p)))
					b = append(b, p...)
				}
				return b
			})
		})
	}
	ext = appendExt(ext, 0x002b, func(b []byte) []byte { return append(b, 2, 0x03, 0x04) }) // supported_versions: TLS 1.3
	if tickets {
		ext = appendExt(ext, 0x002d, func(b []byte) []byte { return append(b, 1, 1) }) // psk_key_exchange_modes: psk_dhe_ke
	}
	ext = appendExt(ext, 0x0033, func(b []byte) []byte { // key_share
		return appendU16Vec(b, func(b []byte) []byte {
			b = append(b, 0x00, 0x1d)
			return appendU16Vec(b, func(b []byte) []byte { return append(b, priv.PublicKey().Bytes()...) })
		})
	})
	body := []byte{0x03, 0x03}
	random := make([]byte, 32)
	rand.Read(random)
	body = append(body, random...)
	body = append(body, 0)                      // empty legacy_session_id: no middlebox ChangeCipherSpec
	body = append(body, 0x00, 0x02, 0x13, 0x01) // cipher_suites: TLS_AES_128_GCM_SHA256
	body = append(body, 1, 0)                   // compression: null
	body = appendU16Vec(body, func(b []byte) []byte { return append(b, ext...) })
	hello := []byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}
	return &leanClient{priv: priv, hello: append(hello, body...)}, nil
}

func appendU16Vec(b []byte, f func([]byte) []byte) []byte {
	n := len(b)
	b = f(append(b, 0, 0))
	binary.BigEndian.PutUint16(b[n:], uint16(len(b)-n-2))
	return b
}

func appendExt(b []byte, typ uint16, f func([]byte) []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, typ)
	return appendU16Vec(b, f)
}

func expandLabel(secret []byte, label string, context []byte, length int) []byte {
	info := binary.BigEndian.AppendUint16(nil, uint16(length))
	info = append(info, byte(len("tls13 ")+len(label)))
	info = append(info, "tls13 "+label...)
	info = append(info, byte(len(context)))
	info = append(info, context...)
	out, err := hkdf.Expand(sha256.New, secret, string(info), length)
	if err != nil {
		panic(err) // lengths are constants here
	}
	return out
}

func trafficAEAD(secret []byte) (cipher.AEAD, []byte) {
	block, err := aes.NewCipher(expandLabel(secret, "key", nil, 16))
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead, expandLabel(secret, "iv", nil, 12)
}

func nonce(iv []byte, seq uint64) []byte {
	n := bytes.Clone(iv)
	for i := 0; i < 8; i++ {
		n[len(n)-1-i] ^= byte(seq >> (8 * i))
	}
	return n
}

// handshake runs one handshake on c and returns when the client's Finished
// is sent.
func (lc *leanClient) handshake(c net.Conn) error {
	rec := append([]byte{22, 0x03, 0x01, byte(len(lc.hello) >> 8), byte(len(lc.hello))}, lc.hello...)
	if _, err := c.Write(rec); err != nil {
		return err
	}
	transcript := sha256.New()
	transcript.Write(lc.hello)

	r := &recordReader{c: c}
	// ServerHello, in the clear.
	typ, payload, err := r.next()
	if err != nil {
		return err
	}
	if typ != 22 || len(payload) < 4 || payload[0] != 2 {
		return fmt.Errorf("want ServerHello, got record type %d: %x", typ, payload[:min(len(payload), 8)])
	}
	serverKey, err := keyShare(payload[4:])
	if err != nil {
		return err
	}
	transcript.Write(payload)
	peer, err := ecdh.X25519().NewPublicKey(serverKey)
	if err != nil {
		return err
	}
	shared, err := lc.priv.ECDH(peer)
	if err != nil {
		return err
	}
	zeros := make([]byte, 32)
	early, _ := hkdf.Extract(sha256.New, zeros, nil)
	emptyHash := sha256.Sum256(nil)
	hs, _ := hkdf.Extract(sha256.New, shared, expandLabel(early, "derived", emptyHash[:], 32))
	helloHash := transcript.Sum(nil)
	clientSecret := expandLabel(hs, "c hs traffic", helloHash, 32)
	serverAEAD, serverIV := trafficAEAD(expandLabel(hs, "s hs traffic", helloHash, 32))

	// The server's encrypted flight, up to its Finished.
	var msgs []byte
	var seq uint64
	for {
		typ, payload, err := r.next()
		if err != nil {
			return err
		}
		if typ == 20 { // ChangeCipherSpec, for middleboxes
			continue
		}
		if typ != 23 {
			return fmt.Errorf("want an encrypted record, got type %d", typ)
		}
		plain, err := serverAEAD.Open(nil, nonce(serverIV, seq), payload, r.header[:])
		if err != nil {
			return fmt.Errorf("decrypting the server's flight: %w", err)
		}
		seq++
		plain = bytes.TrimRight(plain, "\x00")
		if len(plain) == 0 || plain[len(plain)-1] != 22 {
			return errors.New("server sent something other than handshake messages")
		}
		msgs = append(msgs, plain[:len(plain)-1]...)
		done, err := takeMessages(&msgs, transcript)
		if err != nil {
			return err
		}
		if done {
			break
		}
	}

	// The client's Finished.
	mac := hmac.New(sha256.New, expandLabel(clientSecret, "finished", nil, 32))
	mac.Write(transcript.Sum(nil))
	fin := append([]byte{20, 0, 0, 32}, mac.Sum(nil)...)
	fin = append(fin, 22) // inner content type
	clientAEAD, clientIV := trafficAEAD(clientSecret)
	hdr := []byte{23, 0x03, 0x03, 0, byte(len(fin) + clientAEAD.Overhead())}
	out := clientAEAD.Seal(hdr, nonce(clientIV, 0), fin, hdr)
	_, err = c.Write(out)
	return err
}

// takeMessages hashes the whole handshake messages at the start of *msgs
// into the transcript, and reports whether the server's Finished was one.
func takeMessages(msgs *[]byte, transcript hash.Hash) (bool, error) {
	for len(*msgs) >= 4 {
		m := *msgs
		n := int(m[1])<<16 | int(m[2])<<8 | int(m[3])
		if len(m) < 4+n {
			return false, nil
		}
		transcript.Write(m[:4+n])
		*msgs = m[4+n:]
		if m[0] == 20 {
			return true, nil
		}
	}
	return false, nil
}

// keyShare returns the server's X25519 key from a ServerHello body.
func keyShare(b []byte) ([]byte, error) {
	bad := errors.New("malformed ServerHello")
	if len(b) < 2+32+1 {
		return nil, bad
	}
	b = b[2+32:]
	sid := int(b[0])
	if len(b) < 1+sid+2+1+2 {
		return nil, bad
	}
	b = b[1+sid:]
	if b[0] != 0x13 || b[1] != 0x01 {
		return nil, fmt.Errorf("server chose cipher suite %x", b[:2])
	}
	b = b[3:]
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if len(b) < n {
		return nil, bad
	}
	b = b[:n]
	for len(b) >= 4 {
		typ, l := binary.BigEndian.Uint16(b), int(binary.BigEndian.Uint16(b[2:]))
		if len(b) < 4+l {
			return nil, bad
		}
		if typ == 0x0033 && l == 2+2+32 && b[4] == 0 && b[5] == 0x1d {
			return b[8 : 8+32], nil
		}
		b = b[4+l:]
	}
	return nil, errors.New("ServerHello has no X25519 key share (a HelloRetryRequest?)")
}

// recordReader reads TLS records.
type recordReader struct {
	c      net.Conn
	buf    []byte
	header [5]byte
}

func (r *recordReader) next() (byte, []byte, error) {
	for {
		if len(r.buf) >= 5 {
			n := int(binary.BigEndian.Uint16(r.buf[3:5]))
			if len(r.buf) >= 5+n {
				copy(r.header[:], r.buf[:5])
				payload := bytes.Clone(r.buf[5 : 5+n])
				r.buf = r.buf[5+n:]
				return r.header[0], payload, nil
			}
		}
		var tmp [4096]byte
		n, err := r.c.Read(tmp[:])
		if n > 0 {
			r.buf = append(r.buf, tmp[:n]...)
			continue
		}
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
}

package gossip

// Sealing of our frames. Table traffic does not ride memberlist (see
// transport.go), so it is encrypted here, with the same keyring and the
// same rules: AES-GCM under the primary key, any installed key accepted on
// receive, the cluster label authenticated with every frame. A frame is
//
//	magic u8 | scheme u8 (1) | nonce [12] | ciphertext and tag
//
// with the magic, the scheme and the label as additional data. A frame
// sent to many hosts is sealed once (the same plaintext goes to each).

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/hashicorp/memberlist"
)

const (
	// frameMagic starts every frame of ours, on a packet or a stream. It
	// is none of memberlist's first bytes (message types 0-13, its label
	// marker 244, its encryption versions 0-1), so the transport tells the
	// two apart by it.
	frameMagic   = 0xA7
	sealScheme   = 1
	nonceLen     = 12
	sealOverhead = 2 + nonceLen + 16
)

var errDecrypt = errors.New("no installed key opens the frame")

// sealer seals and opens frames with the node's keyring.
type sealer struct {
	label []byte
	kr    *memberlist.Keyring
	aeads atomic.Pointer[[]cipher.AEAD] // primary first
}

func newSealer(label string, kr *memberlist.Keyring) (*sealer, error) {
	s := &sealer{label: []byte(label), kr: kr}
	if err := s.reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// reload rebuilds the ciphers from the keyring; called after every change
// to it.
func (s *sealer) reload() error {
	keys := s.kr.GetKeys()
	aeads := make([]cipher.AEAD, 0, len(keys))
	for _, k := range keys {
		block, err := aes.NewCipher(k)
		if err != nil {
			return fmt.Errorf("cluster key: %w", err)
		}
		gcm, err := cipher.NewGCM(block)
		if err != nil {
			return fmt.Errorf("cluster key: %w", err)
		}
		aeads = append(aeads, gcm)
	}
	s.aeads.Store(&aeads)
	return nil
}

func (s *sealer) ad(dst []byte) []byte {
	return append(append(dst, frameMagic, sealScheme), s.label...)
}

// seal appends a frame carrying plain to dst.
func (s *sealer) seal(dst, plain []byte) []byte {
	aeads := *s.aeads.Load()
	dst = append(dst, frameMagic, sealScheme)
	var nonce [nonceLen]byte
	_, _ = rand.Read(nonce[:]) // never fails (crypto/rand)
	dst = append(dst, nonce[:]...)
	var adBuf [2 + memberlist.LabelMaxSize]byte
	return aeads[0].Seal(dst, nonce[:], plain, s.ad(adBuf[:0]))
}

// open returns the plaintext of a frame.
func (s *sealer) open(frame []byte) ([]byte, error) {
	if len(frame) < sealOverhead || frame[0] != frameMagic {
		return nil, fmt.Errorf("frame of %d bytes: %w", len(frame), errTruncated)
	}
	if frame[1] != sealScheme {
		return nil, fmt.Errorf("seal scheme %d: %w", frame[1], errWireVersion)
	}
	nonce, ct := frame[2:2+nonceLen], frame[2+nonceLen:]
	var adBuf [2 + memberlist.LabelMaxSize]byte
	ad := s.ad(adBuf[:0])
	for _, a := range *s.aeads.Load() {
		if plain, err := a.Open(nil, nonce, ct, ad); err == nil {
			return plain, nil
		}
	}
	return nil, errDecrypt
}

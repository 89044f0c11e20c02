package acme

import (
	"context"
	"errors"
	"sync"

	"github.com/caddyserver/certmagic"
)

var errStopped = errors.New("acme: manager is stopped")

// gatedStorage is certmagic storage that refuses to write once close has
// returned. certmagic's jobs are cancelled by Stop but not waited for, so
// without the gate an obtain finishing late could write into a directory
// that the next Manager (after a restart or in the next test) already owns.
type gatedStorage struct {
	certmagic.Storage

	mu     sync.RWMutex // held for reading across every write, for writing by close
	closed bool
}

func (s *gatedStorage) write(f func() error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errStopped
	}
	return f()
}

// close waits for writes in flight and refuses all later ones.
func (s *gatedStorage) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

func (s *gatedStorage) Store(ctx context.Context, key string, value []byte) error {
	return s.write(func() error { return s.Storage.Store(ctx, key, value) })
}

// Lock creates a lock file, so it is a write. Unlock and Delete stay open
// after close: they only remove what this Manager created.
func (s *gatedStorage) Lock(ctx context.Context, name string) error {
	return s.write(func() error { return s.Storage.Lock(ctx, name) })
}

// TryLock keeps certmagic.TryLocker visible through the wrapper: the ARI
// update uses it to skip work another goroutine is already doing.
func (s *gatedStorage) TryLock(ctx context.Context, name string) (bool, error) {
	tl, ok := s.Storage.(certmagic.TryLocker)
	if !ok {
		return false, errors.New("acme: storage cannot try locks")
	}
	var got bool
	err := s.write(func() (err error) {
		got, err = tl.TryLock(ctx, name)
		return err
	})
	return got, err
}

var _ certmagic.TryLocker = (*gatedStorage)(nil)

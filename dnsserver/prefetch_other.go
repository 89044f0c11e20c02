//go:build !amd64

package dnsserver

import "unsafe"

// prefetch does nothing here: warming is for amd64's PREFETCHT0.
func prefetch(unsafe.Pointer) {}

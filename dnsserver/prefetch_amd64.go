package dnsserver

import "unsafe"

// prefetch asks the CPU to load the cache line at p, without waiting.
//
//go:noescape
func prefetch(p unsafe.Pointer)

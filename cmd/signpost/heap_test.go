package main

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
)

// TestFitHeapAboveHeld: the soft memory limit fitHeap sets is above what
// the runtime holds, even when that is far more than the live heap (a
// heap fragmented by a build's garbage), so that serving does not start
// with the collector running on every allocation.
func TestFitHeapAboveHeld(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	// One object in 16 of 1M survives: 8 MB live in spans of 128 MB.
	all := make([][]byte, 1<<20)
	for i := range all {
		all[i] = make([]byte, 120)
	}
	kept := make([][]byte, 0, len(all)/16)
	for i := 0; i < len(all); i += 16 {
		kept = append(kept, all[i])
	}
	all = nil
	runtime.GC()

	env{getenv: func(string) string { return "" }}.fitHeap()
	limit := debug.SetMemoryLimit(-1)
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	held := int64(s[0].Value.Uint64() - s[1].Value.Uint64())
	if held < 100<<20 {
		t.Fatalf("the runtime holds %d MB: the test did not fragment the heap", held>>20)
	}
	if limit < held+minHeapHeadroom-(4<<20) {
		t.Errorf("memory limit %d MB, below the %d MB held plus %d MB headroom", limit>>20, held>>20, minHeapHeadroom>>20)
	}
	if gc := debug.SetGCPercent(-1); gc != 400 {
		t.Errorf("GOGC %d, want 400", gc)
	}
	runtime.KeepAlive(kept)
}

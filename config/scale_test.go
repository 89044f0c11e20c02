package config

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/signpost-dev/signpost/internal/manyzones"
)

func manyZones(tb testing.TB, n int, o manyzones.Options) []byte {
	tb.Helper()
	var b bytes.Buffer
	if err := manyzones.Write(&b, n, o); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// BenchmarkParse measures Parse on a provider's file with N server names;
// bench/scale/run.sh measures the whole command.
func BenchmarkParse(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		data := manyZones(b, n, manyzones.Options{})
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := Parse("scale.toml", data, Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

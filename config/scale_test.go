package config

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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

// countdown is a context that is done once Err has been asked n times,
// to cancel a build part way through.
type countdown struct {
	context.Context
	n atomic.Int64
}

func (c *countdown) Err() error {
	if c.n.Add(-1) < 0 {
		return context.Canceled
	}
	return nil
}

// TestParseGivesUp: a build whose context is done part way stops with the
// context's error and no model, so SIGTERM need not wait for a provider's
// file.
func TestParseGivesUp(t *testing.T) {
	data := manyZones(t, 1000, manyzones.Options{})
	ctx := &countdown{Context: context.Background()}
	ctx.n.Store(2) // the first zones, then done
	m, err := ParseContext(ctx, "scale.toml", data, Options{})
	if m != nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("got model %v, error %v; want no model and context.Canceled", m != nil, err)
	}
	if want := "config: scale.toml: context canceled"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if left := ctx.n.Load(); left >= 0 {
		t.Errorf("the build asked whether to stop %d times fewer than it was allowed; want it to ask until told to stop", left)
	}
}

// TestReloadReusesZones: a reload that changed one zone gets the previous
// model's *Zone for every other one, which is how the servers know to keep
// what they built from it; the changed zone is new, with a higher serial.
func TestReloadReusesZones(t *testing.T) {
	const n, changed = 50, 3
	clock := time.Unix(1000, 0)
	now := func() time.Time { return clock }
	old, err := Parse("scale.toml", manyZones(t, n, manyzones.Options{}), Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(time.Second)
	next, err := Parse("scale.toml", manyZones(t, n, manyzones.Options{Extra: "probe IN A 192.0.2.1", Changed: changed}), Options{Now: now, Previous: old})
	if err != nil {
		t.Fatal(err)
	}
	if len(next.Zones) != n {
		t.Fatalf("%d zones, want %d", len(next.Zones), n)
	}
	for i, z := range next.Zones {
		if same := z == old.Zones[i]; same != (i != changed) {
			t.Errorf("zone %s: reused %v, want %v", z.Origin, same, i != changed)
		}
		if got := next.ZoneFor("hs." + z.Origin); got != z {
			t.Errorf("ZoneFor(hs.%s) is not the model's zone", z.Origin)
		}
		if d := next.Delegation(strings.TrimSuffix(z.Origin, ".")); d == nil || d.Zone != z {
			t.Errorf("delegation %s: not in the model's zone", z.Origin)
		}
	}
	if got, want := next.Zones[changed].SOA.Serial, uint32(1001); got != want {
		t.Errorf("changed zone serial %d, want %d", got, want)
	}
	if got, want := next.Zones[0].SOA.Serial, uint32(1000); got != want {
		t.Errorf("unchanged zone serial %d, want %d", got, want)
	}
}

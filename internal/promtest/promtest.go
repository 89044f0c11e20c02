// Package promtest reads what Prometheus collectors export, for tests that
// assert exact counter values. It imports nothing of ours.
package promtest

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Values gathers cs through a fresh registry, which also checks them for
// consistency (duplicate series, labels against descriptions), and returns
// every sample by its series in the text format with labels sorted:
// `name{a="x",b="y"}`. A histogram gives name_count, name_sum and
// name_bucket{...,le="..."}.
func Values(t testing.TB, cs ...prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			t.Fatalf("register: %v", err)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	return Flatten(mfs)
}

// Flatten is Values for metric families already gathered.
func Flatten(mfs []*dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for _, mf := range mfs {
		name := mf.GetName()
		for _, m := range mf.GetMetric() {
			labels := make([]string, 0, len(m.GetLabel()))
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			slices.Sort(labels)
			series := func(suffix string, extra ...string) string {
				ls := slices.Concat(labels, extra)
				slices.Sort(ls)
				if len(ls) == 0 {
					return name + suffix
				}
				return name + suffix + "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[series("")] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[series("")] = m.Gauge.GetValue()
			case m.Untyped != nil:
				out[series("")] = m.Untyped.GetValue()
			case m.Histogram != nil:
				out[series("_count")] = float64(m.Histogram.GetSampleCount())
				out[series("_sum")] = m.Histogram.GetSampleSum()
				for _, b := range m.Histogram.GetBucket() {
					out[series("_bucket", fmt.Sprintf("le=%q", fmt.Sprint(b.GetUpperBound())))] = float64(b.GetCumulativeCount())
				}
			}
		}
	}
	return out
}

// Pick returns the entries of vs whose series starts with prefix, as
// sorted lines `series value`, for comparing a family at once.
func Pick(vs map[string]float64, prefix string) []string {
	var out []string
	for k, v := range vs {
		if strings.HasPrefix(k, prefix) {
			out = append(out, fmt.Sprintf("%s %v", k, v))
		}
	}
	slices.Sort(out)
	return out
}

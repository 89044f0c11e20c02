package main

import (
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/signpost-dev/signpost/acme"
	"github.com/signpost-dev/signpost/config"
)

// processMetrics are the metrics main owns: build, listeners, reloads. The
// servers bring their own collectors; everything goes into one registry
// per serve, never the library's global one.
type processMetrics struct {
	reg          *prometheus.Registry
	reloads      *prometheus.CounterVec
	lastSuccess  prometheus.Gauge
	lastReloadOK prometheus.Gauge
}

func newProcessMetrics(b bound, metricsAddr string, now time.Time, cs ...prometheus.Collector) *processMetrics {
	pm := &processMetrics{
		reg: prometheus.NewRegistry(),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signpost_config_reloads_total",
			Help: "Configuration reloads (SIGHUP), by result: success, or failure (rejected; the previous configuration stays).",
		}, []string{"result"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "signpost_config_last_reload_success_timestamp_seconds",
			Help: "When the configuration served was loaded (at start or by a reload), in Unix seconds.",
		}),
		lastReloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "signpost_config_last_reload_successful",
			Help: "1 if the last reload was applied (or none was tried), 0 if it was rejected.",
		}),
	}
	pm.reloads.WithLabelValues("success")
	pm.reloads.WithLabelValues("failure")
	pm.lastSuccess.Set(float64(now.Unix()))
	pm.lastReloadOK.Set(1)
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "signpost_build_info",
		Help:        "Always 1; the labels say which signpost runs.",
		ConstLabels: prometheus.Labels{"version": version(), "goversion": runtime.Version()},
	})
	info.Set(1)
	listeners := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "signpost_listener_info",
		Help: "Always 1, for each address signpost listens on, by kind (dns, https, http, metrics).",
	}, []string{"kind", "address"})
	for _, a := range b.DNS {
		listeners.WithLabelValues("dns", a).Set(1)
	}
	listeners.WithLabelValues("https", b.HTTPS).Set(1)
	listeners.WithLabelValues("http", b.Plain).Set(1)
	if metricsAddr != "" {
		listeners.WithLabelValues("metrics", metricsAddr).Set(1)
	}
	pm.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		info, listeners, pm.reloads, pm.lastSuccess, pm.lastReloadOK,
	)
	pm.reg.MustRegister(cs...)
	return pm
}

// reloaded counts a reload: err nil if it was applied.
func (pm *processMetrics) reloaded(err error, now time.Time) {
	if err != nil {
		pm.reloads.WithLabelValues("failure").Inc()
		pm.lastReloadOK.Set(0)
		return
	}
	pm.reloads.WithLabelValues("success").Inc()
	pm.lastReloadOK.Set(1)
	pm.lastSuccess.Set(float64(now.Unix()))
}

// notReady lists the names of m without a valid certificate: what /readyz
// reports. Every listener is bound and the model loaded before the
// metrics listener serves, so nothing else can be missing.
func notReady(m *config.Model, certs *acme.Manager, now time.Time) []string {
	have := certs.NotAfter()
	var out []string
	for _, name := range m.CertificateNames() {
		if t, ok := have[name]; !ok || !t.After(now) {
			out = append(out, name+" has no valid certificate")
		}
	}
	return out
}

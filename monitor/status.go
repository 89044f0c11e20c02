package monitor

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// Status is what /status answers: a summary of the metrics for people and
// scripts. Times are UTC; a zero time means never.
type Status struct {
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	// Problems are what needs the operator's attention, one sentence
	// each: `signpost status` exits 1 when there is any.
	Problems []string `json:"problems"`
	// NotReady is what /readyz reports: why the instance is not ready.
	NotReady     []string      `json:"not_ready"`
	Listeners    []Listener    `json:"listeners"`
	Reload       Reload        `json:"reload"`
	Zones        []Zone        `json:"zones"`
	Certificates []Certificate `json:"certificates"`
	Secondaries  []Secondary   `json:"secondaries"`
}

type Listener struct {
	Kind    string `json:"kind"` // dns, https, http, metrics
	Address string `json:"address"`
}

type Reload struct {
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	// LastSuccess is when the configuration served was loaded: at start,
	// or by the last reload that was not rejected.
	LastSuccess  time.Time `json:"last_success,omitzero"`
	LastRejected bool      `json:"last_rejected"`
}

type Zone struct {
	Zone   string `json:"zone"`
	Serial uint32 `json:"serial"`
}

type Certificate struct {
	Name        string    `json:"name"`
	NotAfter    time.Time `json:"not_after,omitzero"` // absent: none yet
	LastFailure time.Time `json:"last_failure,omitzero"`
}

type Secondary struct {
	Zone          string  `json:"zone"`
	Secondary     string  `json:"secondary"`
	Up            bool    `json:"up"`
	Serial        uint32  `json:"serial"` // 0 while it does not answer
	Behind        bool    `json:"behind"`
	BehindSeconds float64 `json:"behind_seconds"`
}

// CertificateWarning is how close to expiry a certificate must come to be
// a problem. certmagic renews at a third of the lifetime left (30 days of
// Let's Encrypt's 90), so one this close has failed to renew for weeks.
const CertificateWarning = 14 * 24 * time.Hour

// StatusOf summarises gathered metrics as of now.
func StatusOf(mfs []*dto.MetricFamily, now time.Time) Status {
	fam := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		fam[mf.GetName()] = mf
	}
	each := func(name string, f func(labels map[string]string, v float64)) {
		mf := fam[name]
		if mf == nil {
			return
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			var v float64
			switch {
			case m.Gauge != nil:
				v = m.Gauge.GetValue()
			case m.Counter != nil:
				v = m.Counter.GetValue()
			case m.Untyped != nil:
				v = m.Untyped.GetValue()
			}
			f(labels, v)
		}
	}
	unix := func(v float64) time.Time {
		if v <= 0 {
			return time.Time{}
		}
		sec, frac := math.Modf(v)
		return time.Unix(int64(sec), int64(frac*1e9)).UTC()
	}

	st := Status{Problems: []string{}, NotReady: []string{}, Listeners: []Listener{}, Zones: []Zone{},
		Certificates: []Certificate{}, Secondaries: []Secondary{}}
	each("signpost_build_info", func(l map[string]string, _ float64) { st.Version = l["version"] })
	each("process_start_time_seconds", func(_ map[string]string, v float64) { st.Started = unix(v).Truncate(time.Second) })
	each("signpost_listener_info", func(l map[string]string, _ float64) {
		st.Listeners = append(st.Listeners, Listener{Kind: l["kind"], Address: l["address"]})
	})
	each("signpost_config_reloads_total", func(l map[string]string, v float64) {
		switch l["result"] {
		case "success":
			st.Reload.Succeeded = int(v)
		case "failure":
			st.Reload.Failed = int(v)
		}
	})
	each("signpost_config_last_reload_success_timestamp_seconds", func(_ map[string]string, v float64) { st.Reload.LastSuccess = unix(v) })
	each("signpost_config_last_reload_successful", func(_ map[string]string, v float64) { st.Reload.LastRejected = v == 0 })
	serving := map[string]uint32{}
	each("signpost_dns_zone_serial", func(l map[string]string, v float64) {
		st.Zones = append(st.Zones, Zone{Zone: l["zone"], Serial: uint32(v)})
		serving[l["zone"]] = uint32(v)
	})
	certs := map[string]*Certificate{}
	each("signpost_certificate_not_after_seconds", func(l map[string]string, v float64) {
		certs[l["name"]] = &Certificate{Name: l["name"], NotAfter: unix(v)}
	})
	each("signpost_certificate_last_failure_timestamp_seconds", func(l map[string]string, v float64) {
		if c := certs[l["name"]]; c != nil {
			c.LastFailure = unix(v)
		}
	})
	for _, c := range certs {
		st.Certificates = append(st.Certificates, *c)
	}
	secs := map[[2]string]*Secondary{}
	sec := func(l map[string]string) *Secondary {
		k := [2]string{l["zone"], l["secondary"]}
		if secs[k] == nil {
			secs[k] = &Secondary{Zone: k[0], Secondary: k[1]}
		}
		return secs[k]
	}
	each("signpost_secondary_up", func(l map[string]string, v float64) { sec(l).Up = v == 1 })
	each("signpost_secondary_serial", func(l map[string]string, v float64) { sec(l).Serial = uint32(v) })
	each("signpost_secondary_behind", func(l map[string]string, v float64) { sec(l).Behind = v == 1 })
	each("signpost_secondary_behind_seconds", func(l map[string]string, v float64) { sec(l).BehindSeconds = v })
	for _, s := range secs {
		st.Secondaries = append(st.Secondaries, *s)
	}

	slices.SortFunc(st.Listeners, func(a, b Listener) int {
		return cmp.Or(cmp.Compare(kindOrder(a.Kind), kindOrder(b.Kind)), cmp.Compare(a.Address, b.Address))
	})
	slices.SortFunc(st.Zones, func(a, b Zone) int { return cmp.Compare(a.Zone, b.Zone) })
	slices.SortFunc(st.Certificates, func(a, b Certificate) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(st.Secondaries, func(a, b Secondary) int {
		return cmp.Or(cmp.Compare(a.Zone, b.Zone), cmp.Compare(a.Secondary, b.Secondary))
	})

	if st.Reload.LastRejected {
		st.Problems = append(st.Problems, fmt.Sprintf("the last reload was rejected (see the log); still serving the configuration loaded %s", st.Reload.LastSuccess.Format(time.RFC3339)))
	}
	for _, c := range st.Certificates {
		switch left := c.NotAfter.Sub(now); {
		case c.NotAfter.IsZero():
			st.Problems = append(st.Problems, fmt.Sprintf("%s has no certificate yet", c.Name))
		case left <= 0:
			st.Problems = append(st.Problems, fmt.Sprintf("the certificate of %s expired %s", c.Name, c.NotAfter.Format(time.RFC3339)))
		case left < CertificateWarning:
			p := fmt.Sprintf("the certificate of %s expires in %d days (%s) and has not been renewed", c.Name, int(left/(24*time.Hour)), c.NotAfter.Format(time.RFC3339))
			if !c.LastFailure.IsZero() {
				p += fmt.Sprintf("; the last attempt failed %s", c.LastFailure.Format(time.RFC3339))
			}
			st.Problems = append(st.Problems, p)
		}
	}
	for _, s := range st.Secondaries {
		// Behind at one check only is a change on its way (NOTIFY, then a
		// transfer); behind at two in a row is a problem.
		if !s.Behind || s.BehindSeconds <= 0 {
			continue
		}
		what := fmt.Sprintf("serves serial %d, signpost %d", s.Serial, serving[s.Zone])
		if !s.Up {
			what = "does not answer for the zone"
		}
		st.Problems = append(st.Problems, fmt.Sprintf("secondary %s is behind on %s for %s: %s", s.Secondary, s.Zone, time.Duration(s.BehindSeconds)*time.Second, what))
	}
	return st
}

func kindOrder(k string) int {
	return slices.Index([]string{"dns", "https", "http", "metrics"}, k)
}

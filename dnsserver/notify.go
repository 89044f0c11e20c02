package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/signpost-dev/signpost/config"
)

// maxNotifying bounds the zones being notified at once per secondary, as
// NSD bounds its own (XFRD_MAX_UDP_NOTIFY, 128 in NSD 4.x, for all
// secondaries): a provider with 10,000 zones and a secondary would
// otherwise, at each start, hold 10,000 goroutines with their sockets
// (110 MB more resident memory, measured with signpost serve) and send
// the secondary 10,000 NOTIFYs at once, each of which sets off a SOA query
// and a transfer. The others wait their turn, in order. The bound is per
// secondary so that one which does not answer, and keeps its jobs through
// their retries, delays no other.
const maxNotifying = 128

// notifier sends NOTIFY (RFC 1996) to secondaries. Each secondary and zone
// pair has at most one job, and at most max jobs have a goroutine, which
// sends the newest SOA until the secondary answers or the tries run out; a
// serial change while a job waits or runs joins it (and starts a running
// one's tries afresh), so a burst of changes costs one NOTIFY per
// secondary, not one per change. Jobs get goroutines per secondary, at
// most max at a time.
type notifier struct {
	o      Options
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	jobs    map[notifyKey]*notifyJob
	targets map[netip.AddrPort]*notifyTarget
	max     int
	stopped bool

	// onDone, if set (by tests), hears of each secondary and zone done
	// with: answered, or given up on.
	onDone func(k notifyKey, serial uint32, answered bool, tries int)
	stats  *dnsStats // counts every NOTIFY sent; nil: none
}

type notifyKey struct {
	zone   string
	target netip.AddrPort
}

// notifyTarget is one secondary's jobs: those waiting for a goroutine,
// oldest first, and how many have one.
type notifyTarget struct {
	queue   []notifyKey
	running int
}

type notifyJob struct {
	soa  *dns.SOA
	key  *config.TSIGKey
	gen  int           // counts send calls, so the goroutine sees a newer serial
	wake chan struct{} // cuts short the pause before a retry when a newer serial comes
	// running: the job has its goroutine; else it waits in the queue.
	running bool
}

func newNotifier(o Options, log *slog.Logger) *notifier {
	ctx, cancel := context.WithCancel(context.Background())
	return &notifier{o: o, log: log, ctx: ctx, cancel: cancel, jobs: map[notifyKey]*notifyJob{}, targets: map[netip.AddrPort]*notifyTarget{}, max: maxNotifying}
}

// send tells every secondary in secs that zone now has soa. It does not
// wait for them.
func (n *notifier) send(zone string, soa *dns.SOA, secs []*config.Secondary) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped {
		return
	}
	for _, sec := range secs {
		k := notifyKey{zone: zone, target: sec.Notify}
		if j := n.jobs[k]; j != nil {
			j.soa, j.key = soa, sec.Key
			if !j.running {
				continue // it sends the newest when its turn comes
			}
			j.gen++
			select {
			case j.wake <- struct{}{}:
			default:
			}
			continue
		}
		n.jobs[k] = &notifyJob{soa: soa, key: sec.Key, wake: make(chan struct{}, 1)}
		t := n.targets[k.target]
		if t == nil {
			t = &notifyTarget{}
			n.targets[k.target] = t
		}
		t.queue = append(t.queue, k)
		n.startQueued(k.target)
	}
}

// startQueued gives the waiting jobs for target a goroutine while fewer
// than max run; the caller holds n.mu.
func (n *notifier) startQueued(target netip.AddrPort) {
	t := n.targets[target]
	for t.running < n.max && len(t.queue) > 0 && !n.stopped {
		k := t.queue[0]
		t.queue = t.queue[1:]
		j := n.jobs[k]
		j.running = true
		t.running++
		n.wg.Add(1)
		go n.run(k, j)
	}
	if len(t.queue) == 0 {
		t.queue = nil // let the backing array go
		if t.running == 0 {
			delete(n.targets, target)
		}
	}
}

// stop abandons every NOTIFY still being tried or waiting, and refuses new
// ones.
func (n *notifier) stop() {
	n.mu.Lock()
	n.stopped = true
	var queued []notifyKey
	var dropped []*notifyJob
	for _, t := range n.targets {
		for _, k := range t.queue {
			queued = append(queued, k)
			dropped = append(dropped, n.jobs[k])
			delete(n.jobs, k)
		}
		t.queue = nil
	}
	n.mu.Unlock()
	n.cancel()
	if n.onDone != nil {
		for i, k := range queued {
			n.onDone(k, dropped[i].soa.Serial, false, 0)
		}
	}
}

// wait returns when every goroutine of the notifier has ended.
func (n *notifier) wait() { n.wg.Wait() }

// pending is the number of secondary and zone pairs being notified or
// waiting to be.
func (n *notifier) pending() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.jobs)
}

func (n *notifier) run(k notifyKey, j *notifyJob) {
	defer n.wg.Done()
	// finish ends the job; the caller holds n.mu.
	finish := func(soa *dns.SOA, answered bool, err error, tries int) {
		delete(n.jobs, k)
		n.targets[k.target].running--
		n.startQueued(k.target)
		n.mu.Unlock()
		attrs := []any{"zone", k.zone, "serial", soa.Serial, "secondary", k.target.String(), "tries", tries}
		switch {
		case n.ctx.Err() != nil:
		case answered && err == nil:
			n.log.Debug("notify answered", attrs...)
		case answered:
			n.log.Warn("notify rejected", append(attrs, "err", err)...)
		default:
			n.log.Warn("notify unanswered; the secondary will find the change at its next refresh", append(attrs, "err", err)...)
		}
		if n.onDone != nil {
			n.onDone(k, soa.Serial, answered, tries)
		}
	}
	delay := n.o.NotifyRetryDelay
	for try := 1; ; try++ {
		n.mu.Lock()
		soa, key, gen := j.soa, j.key, j.gen
		n.mu.Unlock()
		answered, err := n.exchange(k, soa, key)
		if n.stats != nil && n.ctx.Err() == nil {
			n.stats.notified(k.zone, k.target.String(), answered)
		}
		n.mu.Lock()
		if j.gen != gen {
			// A newer serial arrived while this one was on its way: send
			// it at once, with tries afresh.
			n.mu.Unlock()
			select {
			case <-j.wake:
			default:
			}
			try, delay = 0, n.o.NotifyRetryDelay
			continue
		}
		if answered || try >= n.o.NotifyTries || n.ctx.Err() != nil {
			finish(soa, answered, err, try)
			return
		}
		n.mu.Unlock()
		t := time.NewTimer(delay)
		select {
		case <-n.ctx.Done():
			t.Stop()
			n.mu.Lock()
			finish(soa, false, n.ctx.Err(), try)
			return
		case <-j.wake:
			// A newer serial: no reason to wait out the pause.
			t.Stop()
			try, delay = 0, n.o.NotifyRetryDelay
			continue
		case <-t.C:
		}
		delay *= 2
	}
}

var errNotifyMismatch = errors.New("reply is not a NOTIFY response for the zone")

// exchange sends one NOTIFY for soa to k.target, signed with key if there
// is one. answered says a reply to it came back, whatever its rcode: trying
// again would get the same.
func (n *notifier) exchange(k notifyKey, soa *dns.SOA, key *config.TSIGKey) (answered bool, err error) {
	m := new(dns.Msg)
	m.SetNotify(k.zone)
	// RFC 1996 §3.7: the new SOA may go along, so the secondary can
	// skip its SOA query when it already has this serial.
	m.Answer = []dns.RR{soa}
	c := &dns.Client{Net: "udp", Timeout: n.o.NotifyTimeout}
	if key != nil {
		c.TsigProvider = newKeyring([]*config.TSIGKey{key})
		m.SetTsig(key.Name, key.Algorithm, tsigFudge, time.Now().Unix())
	}
	r, _, err := c.ExchangeContext(n.ctx, m, k.target.String())
	if r == nil {
		return false, err
	}
	// The client matched the ID. NSD leaves the question out of error
	// replies, so an absent question still matches.
	if !r.Response || r.Opcode != dns.OpcodeNotify ||
		(len(r.Question) > 0 && !strings.EqualFold(dns.Fqdn(r.Question[0].Name), k.zone)) {
		return false, errNotifyMismatch
	}
	if err != nil {
		return true, fmt.Errorf("reply signature: %w", err)
	}
	if r.Rcode != dns.RcodeSuccess {
		return true, fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
	}
	return true, nil
}

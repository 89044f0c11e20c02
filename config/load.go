package config

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// Options change how a file becomes a Model. The zero value is ready to use.
type Options struct {
	// Now is the clock zone serials are taken from; time.Now if nil.
	Now func() time.Time
	// Previous is the model being replaced by a reload, if any. A zone whose
	// content did not change keeps its serial; one that changed gets a serial
	// above the previous one even if the clock went backwards.
	Previous *Model
	// Floor holds, per origin, the last serial served before a restart
	// (the servers persist it). Every new serial is above it, so secondaries
	// never see the serial go backwards.
	Floor map[string]uint32
}

// Load reads path and returns the model it describes. When the file is
// invalid the error is an Errors listing every problem.
func Load(path string, o Options) (*Model, error) {
	return LoadContext(context.Background(), path, o)
}

// LoadContext is Load that gives up when ctx is done, between zones, and
// returns ctx's error: a provider's file takes long enough to build that
// SIGTERM should not wait for it.
func LoadContext(ctx context.Context, path string, o Options) (*Model, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return ParseContext(ctx, path, data, o)
}

// Parse is Load for a file already in memory; path is used in messages only.
func Parse(path string, data []byte, o Options) (*Model, error) {
	return ParseContext(context.Background(), path, data, o)
}

// ParseContext is Parse that gives up when ctx is done, as LoadContext.
func ParseContext(ctx context.Context, path string, data []byte, o Options) (*Model, error) {
	// Lines are looked up only for problems, so a valid file is never
	// indexed: for 10,000 zones the index is a fifth of the time to load
	// and, kept in the model, 20 MB.
	pos := sync.OnceValue(func() *positions { return indexPositions(data) })
	ps := &problems{ctx: ctx, file: path, pos: pos}
	var f file
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		ps.decodeError(err)
		// Unknown keys leave the rest decoded, so validate it too and report
		// everything at once; any other decode error leaves nothing to check.
		var strict *toml.StrictMissingError
		if !errors.As(err, &strict) {
			return nil, Errors(sorted(ps.errs))
		}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	m := build(ps, &f, o)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	if len(ps.errs) > 0 {
		return nil, Errors(sorted(ps.errs))
	}
	m.Path = path
	m.pos = pos
	m.Warnings = sorted(ps.warnings)
	return m, nil
}

func (ps *problems) decodeError(err error) {
	var strict *toml.StrictMissingError
	var de *toml.DecodeError
	switch {
	case errors.As(err, &strict):
		for _, e := range strict.Errors {
			line, column := e.Position()
			key := []string(e.Key())
			name := key[len(key)-1]
			path := ps.pos().pathAt(line, column)
			if path == "" {
				path = strings.Join(key, ".")
			}
			table := tableOfPath(path)
			msg := "unknown key"
			if s := closest(name, knownKeys[table]); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			} else if len(knownKeys[table]) > 0 {
				msg += "; expected one of " + strings.Join(knownKeys[table], ", ")
			}
			ps.errs = append(ps.errs, &Problem{File: ps.file, Line: line, Key: path, Msg: msg})
		}
	case errors.As(err, &de):
		line, _ := de.Position()
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		ps.errs = append(ps.errs, &Problem{File: ps.file, Line: line, Key: strings.Join(de.Key(), "."), Msg: msg})
	default:
		ps.errs = append(ps.errs, &Problem{File: ps.file, Msg: err.Error()})
	}
}

// knownKeys lists the keys of each table, for "did you mean" hints. It must
// follow the toml tags below; TestKnownKeys checks that it does.
var knownKeys = map[string][]string{
	"":                            {"dns", "http", "acme", "metrics", "zone", "delegation", "key", "secondary", "update"},
	"dns":                         {"listen", "nameservers", "hostmaster", "ttl", "catalog", "nsid", "cookie_secret", "cookie_secret_previous", "rrl", "dnssec"},
	"dns.rrl":                     {"rate", "slip", "ipv4_prefix", "ipv6_prefix", "exempt"},
	"http":                        {"listen", "plain_listen", "root_redirect", "server_max_age", "client_max_age"},
	"acme":                        {"email", "directory", "challenges", "ca_root", "storage", "mode", "names"},
	"metrics":                     {"listen"},
	"zone":                        {"origin", "addresses", "records", "dnssec"},
	"delegation":                  {"server_name", "server", "client", "identity_server", "srv_fallback", "client_extra", "support"},
	"delegation.support":          {"page", "contacts"},
	"delegation.support.contacts": {"matrix_id", "email", "role"},
	"key":                         {"name", "algorithm", "secret", "secret_file"},
	"secondary":                   {"address", "key", "zones"},
	"update":                      {"key", "names"},
}

// file is the TOML document as written; build turns it into a Model.
type file struct {
	DNS        dnsTable          `toml:"dns"`
	HTTP       httpTable         `toml:"http"`
	ACME       acmeTable         `toml:"acme"`
	Metrics    metricsTable      `toml:"metrics"`
	Zone       []zoneTable       `toml:"zone"`
	Delegation []delegationTable `toml:"delegation"`
	Key        []keyTable        `toml:"key"`
	Secondary  []secondaryTable  `toml:"secondary"`
	Update     []updateTable     `toml:"update"`
}

type dnsTable struct {
	Listen      []string `toml:"listen"`
	Nameservers []string `toml:"nameservers"`
	Hostmaster  string   `toml:"hostmaster"`
	TTL         string   `toml:"ttl"`
	Catalog     string   `toml:"catalog"`
	// Keys of dns.go: EDNS options and rate limiting.
	NSID                 string    `toml:"nsid"`
	CookieSecret         string    `toml:"cookie_secret"`
	CookieSecretPrevious string    `toml:"cookie_secret_previous"`
	RRL                  *rrlTable `toml:"rrl"`
	DNSSEC               bool      `toml:"dnssec"`
}

type httpTable struct {
	Listen       string `toml:"listen"`
	PlainListen  string `toml:"plain_listen"`
	RootRedirect string `toml:"root_redirect"`
	ServerMaxAge string `toml:"server_max_age"`
	ClientMaxAge string `toml:"client_max_age"`
}

type acmeTable struct {
	Email      string   `toml:"email"`
	Directory  string   `toml:"directory"`
	Challenges []string `toml:"challenges"`
	CARoot     string   `toml:"ca_root"`
	Storage    string   `toml:"storage"`
	Mode       string   `toml:"mode"`
	Names      []string `toml:"names"`
}

type metricsTable struct {
	Listen string `toml:"listen"`
}

type zoneTable struct {
	Origin    string   `toml:"origin"`
	Addresses []string `toml:"addresses"`
	Records   []string `toml:"records"`
	DNSSEC    *bool    `toml:"dnssec"`
}

type delegationTable struct {
	ServerName     string         `toml:"server_name"`
	Server         string         `toml:"server"`
	Client         string         `toml:"client"`
	IdentityServer string         `toml:"identity_server"`
	SRVFallback    *bool          `toml:"srv_fallback"`
	ClientExtra    map[string]any `toml:"client_extra"`
	Support        *supportTable  `toml:"support"`
}

type supportTable struct {
	Page     string         `toml:"page"`
	Contacts []contactTable `toml:"contacts"`
}

type contactTable struct {
	MatrixID string `toml:"matrix_id"`
	Email    string `toml:"email"`
	Role     string `toml:"role"`
}

package httpserver

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/signpost-dev/signpost/config"
)

// Default Cache-Control max-ages, for a model that leaves them zero.
const (
	defaultServerMaxAge = 24 * time.Hour
	defaultClientMaxAge = time.Hour
)

// index is everything a request needs from one model, with every response
// header already built, so that answering is a map lookup and a few
// appends of prepared bytes. It is never modified after newIndex returns.
type index struct {
	sites map[string]*site // by lower-case server name
	// root answers "/" on a known host; a nil response means 404.
	root reply
	// httpsPort is ":port" for redirects to an HTTPS listener that is not
	// on 443, else empty.
	httpsPort string
	// serverAnswers and clientAnswers are what the server document and the
	// other two share; nil without a model.
	serverAnswers, clientAnswers *docAnswers
}

// site is one host name signpost answers for.
type site struct {
	name string
	// docs holds the server, client and support documents, in the order of
	// docServer, docClient and docSupport; nil means 404.
	docs [3]*document
	// stats are the name's counters, nil until its first request: most
	// of a provider's 10,000 names may see none between two restarts, and
	// 44 counters are over half of what a name costs.
	stats atomic.Pointer[siteStats]
}

const (
	docServer = iota
	docClient
	docSupport
)

// document is one discovery document. It holds only what differs from
// one document to the next; the rest of its answers is shared by every
// document with the same Cache-Control. A provider has 30,000 of these,
// and whole precomputed answers for each took over 1 KB a document.
type document struct {
	body []byte
	// tag and length are the ETag (quoted) and Content-Length values, as
	// arrays so that the net/http path sends them as header values without
	// allocating: a slice of either has cap 1, so an append copies.
	tag, length [1]string
	answers     *docAnswers
}

// docAnswers are the 200 and 304 of every document with one Cache-Control
// value, each missing the document's own values.
type docAnswers struct {
	cache           string // the Cache-Control value
	ok, notModified response
}

// response is a complete precomputed answer, or the part of one that every
// document with the same Cache-Control shares.
type response struct {
	status int
	header []field
	body   []byte // nil when docBody
	// docBody means the body is the document's.
	docBody bool
	// h1 is the HTTP/1.1 status line and header fields as the fast path
	// writes them, Date and Connection excepted: the bytes net/http would
	// write, fields sorted by name. It is cut where a document's own values
	// go.
	h1 []segment
}

// segment is a piece of a response's HTTP/1.1 header: text, then the
// document's value of a field if then is not ownValue.
type segment struct {
	text []byte
	then docValue
}

// docValue says where a header field's value comes from.
type docValue uint8

const (
	ownValue  docValue = iota // the field's own
	docTag                    // the document's ETag
	docLength                 // the document's Content-Length
)

// reply is an answer: a response, and the document that fills in its
// document values, nil for an answer that has none.
type reply struct {
	*response
	doc *document
}

// content returns the body to send, HEAD aside.
func (r reply) content() []byte {
	if r.docBody {
		return r.doc.body
	}
	return r.body
}

// value returns the value of header field f.
func (r reply) value(f *field) []string {
	switch f.from {
	case docTag:
		return r.doc.tag[:]
	case docLength:
		return r.doc.length[:]
	}
	return f.value
}

// appendH1 appends r's status line and header fields, as h1 says, to out.
func (r reply) appendH1(out []byte) []byte {
	for i := range r.h1 {
		s := &r.h1[i]
		out = append(out, s.text...)
		switch s.then {
		case docTag:
			out = append(out, r.doc.tag[0]...)
		case docLength:
			out = append(out, r.doc.length[0]...)
		}
	}
	return out
}

// finish fills in r.h1 from r.status and r.header.
func (r *response) finish() *response {
	fields := slices.Clone(r.header)
	slices.SortStableFunc(fields, func(a, b field) int { return strings.Compare(a.key, b.key) })
	b := fmt.Appendf(nil, "HTTP/1.1 %03d %s\r\n", r.status, http.StatusText(r.status))
	for _, f := range fields {
		if f.from != ownValue {
			b = append(b, f.key...)
			b = append(b, ": "...)
			r.h1 = append(r.h1, segment{text: b, then: f.from})
			b = []byte("\r\n")
			continue
		}
		for _, v := range f.value {
			// As net/http writes values: a newline in root_redirect must
			// not start a header of its own.
			v = strings.Trim(strings.NewReplacer("\r", " ", "\n", " ").Replace(v), " \t")
			b = append(b, f.key...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	r.h1 = append(r.h1, segment{text: b})
	return r
}

// field is one response header. value is shared by every response that
// sends it, so it is built with cap == len: an append copies instead of
// writing into the shared array.
type field struct {
	key   string // canonical form
	value []string
	from  docValue // if not ownValue, the value is the document's
}

func newField(key, value string) field {
	return field{key: http.CanonicalHeaderKey(key), value: []string{value}[:1:1]}
}

// CORS on every response under /.well-known/matrix/, errors included:
// without it on a 404, Element Web reports a missing client document as a
// failed login instead of falling back. The methods are the Matrix spec's
// recommended set plus HEAD.
var corsFields = []field{
	newField("Access-Control-Allow-Origin", "*"),
	newField("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, DELETE, OPTIONS"),
	newField("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization"),
}

const wellKnownPrefix = "/.well-known/matrix/"

func newResponse(status int, body string, cors bool, extra ...field) reply {
	r := &response{status: status}
	if cors {
		r.header = append(r.header, corsFields...)
	}
	r.header = append(r.header, extra...)
	if body != "" {
		r.body = []byte(body)
		r.header = append(r.header,
			newField("Content-Type", "application/json"),
			newField("Content-Length", strconv.Itoa(len(body))))
	}
	return reply{response: r.finish()}
}

// Answers that do not depend on the model, in two flavours: with CORS for
// paths under /.well-known/matrix/ ([1]) and without ([0]).
var (
	notFound = [2]reply{
		newResponse(http.StatusNotFound, `{"errcode":"M_NOT_FOUND","error":"Not found"}`, false),
		newResponse(http.StatusNotFound, `{"errcode":"M_NOT_FOUND","error":"Not found"}`, true),
	}
	// misdirected answers a request whose Host is not the name the TLS
	// connection was opened for (RFC 9110 section 15.5.20): a browser that
	// coalesced connections retries on a new one, and nobody gets the
	// documents of a name the certificate was not checked for.
	misdirected = [2]reply{
		newResponse(http.StatusMisdirectedRequest, `{"errcode":"M_UNKNOWN","error":"Misdirected request: the Host header does not match the TLS server name"}`, false),
		newResponse(http.StatusMisdirectedRequest, `{"errcode":"M_UNKNOWN","error":"Misdirected request: the Host header does not match the TLS server name"}`, true),
	}
	wellKnownMethodNotAllowed = newResponse(http.StatusMethodNotAllowed,
		`{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`, true,
		newField("Allow", "GET, HEAD, OPTIONS"))
	// bodyNotAllowed answers every request with a method that carries a
	// body, on any path (see bodyless).
	bodyNotAllowed       = wellKnownMethodNotAllowed
	rootMethodNotAllowed = newResponse(http.StatusMethodNotAllowed,
		`{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`, false,
		newField("Allow", "GET, HEAD"))
	preflight = newResponse(http.StatusNoContent, "", true,
		newField("Allow", "GET, HEAD, OPTIONS"))
)

// newIndex precomputes the answers for m; a nil m gives an index that knows
// no host. Documents of prev that m serves unchanged are reused, so that a
// reload that changed one of a provider's 10,000 names builds one site.
func newIndex(m *config.Model, prev *index) *index {
	ix := &index{sites: map[string]*site{}}
	if m == nil {
		return ix
	}
	serverAge := reuseDocAnswers(prev, maxAge(m.HTTP.ServerMaxAge, defaultServerMaxAge))
	clientAge := reuseDocAnswers(prev, maxAge(m.HTTP.ClientMaxAge, defaultClientMaxAge))
	ix.serverAnswers, ix.clientAnswers = serverAge, clientAge
	for _, d := range m.Delegations {
		name := normalName(d.ServerName)
		if _, dup := ix.sites[name]; dup {
			continue // config rejects duplicates; first one wins if not
		}
		var old [3]*document
		if prev != nil {
			if st := prev.sites[name]; st != nil {
				old = st.docs
			}
		}
		st := &site{name: name, docs: [3]*document{
			reuseDocument(old[docServer], d.ServerDoc, serverAge),
			reuseDocument(old[docClient], d.ClientDoc, clientAge),
			reuseDocument(old[docSupport], d.SupportDoc, clientAge),
		}}
		if prev != nil && prev.sites[name] != nil && prev.sites[name].docs == st.docs {
			st = prev.sites[name]
		}
		ix.sites[name] = st
	}
	// Extra certificate names get no documents, but "/" and the redirect
	// to https work on them as on any name this host has a certificate for.
	for _, n := range m.ACME.Names {
		name := normalName(n)
		if _, ok := ix.sites[name]; !ok {
			ix.sites[name] = &site{name: name}
		}
	}
	if m.HTTP.RootRedirect != "" {
		// 302, not 301: browsers keep a 301 forever, and root_redirect may
		// change on the next reload.
		ix.root = newResponse(http.StatusFound, "", false,
			newField("Location", m.HTTP.RootRedirect),
			newField("Content-Length", "0"))
	}
	if _, port, err := net.SplitHostPort(m.HTTP.Listen); err == nil && port != "443" && port != "0" && port != "" {
		ix.httpsPort = ":" + port
	}
	return ix
}

func normalName(s string) string {
	return strings.ToLower(strings.TrimSuffix(s, "."))
}

func maxAge(d, def time.Duration) string {
	if d <= 0 {
		d = def
	}
	return "max-age=" + strconv.FormatInt(int64(d/time.Second), 10)
}

// reuseDocument returns old if it answers with body and answers' Cache-Control,
// else newDocument(body, answers).
func reuseDocument(old *document, body []byte, answers *docAnswers) *document {
	if old != nil && body != nil && old.answers.cache == answers.cache && bytes.Equal(old.body, body) {
		return old
	}
	return newDocument(body, answers)
}

// reuseDocAnswers returns prev's answers for Cache-Control cache if it has
// them, else newDocAnswers(cache): a reload that keeps the max-ages builds
// none, and the documents it reuses share them with the new ones.
func reuseDocAnswers(prev *index, cache string) *docAnswers {
	if prev != nil {
		for _, a := range []*docAnswers{prev.serverAnswers, prev.clientAnswers} {
			if a != nil && a.cache == cache {
				return a
			}
		}
	}
	return newDocAnswers(cache)
}

// newDocAnswers builds the answers shared by every document sent with
// Cache-Control cache.
func newDocAnswers(cache string) *docAnswers {
	a := &docAnswers{cache: cache}
	tag := field{key: "Etag", from: docTag}
	a.ok = response{status: http.StatusOK, docBody: true}
	a.ok.header = append(append(make([]field, 0, len(corsFields)+4), corsFields...),
		newField("Cache-Control", cache), tag,
		newField("Content-Type", "application/json"), field{key: "Content-Length", from: docLength})
	a.ok.finish()
	// The 304 sends the same fields but the body's: they come first in
	// the 200's, so it shares them.
	a.notModified = response{status: http.StatusNotModified, header: a.ok.header[: len(corsFields)+2 : len(corsFields)+2]}
	a.notModified.finish()
	return a
}

// newDocument returns the document for body, sent with answers; nil for a
// document that is not configured.
func newDocument(body []byte, answers *docAnswers) *document {
	if body == nil {
		return nil
	}
	// Strong validator: the bytes are the representation, the same over
	// HTTP/1.1 and HTTP/2, never compressed.
	sum := sha256.Sum256(body)
	return &document{
		body:    body,
		tag:     [1]string{`"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`},
		length:  [1]string{strconv.Itoa(len(body))},
		answers: answers,
	}
}

// lookup returns the site for a host as splitHost returned it, or nil.
func (ix *index) lookup(host string) *site {
	if st, ok := ix.sites[host]; ok {
		return st
	}
	for i := 0; i < len(host); i++ {
		if c := host[i]; 'A' <= c && c <= 'Z' {
			return ix.sites[strings.ToLower(host)]
		}
	}
	return nil
}

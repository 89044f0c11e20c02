package probe

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"time"
)

// maxSafeInt is canonical JSON's integer bound, 2^53-1.
const maxSafeInt = 1<<53 - 1

// decodeJSON decodes b keeping numbers exact, for canonical re-encoding.
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("data after the JSON value")
	}
	return v, nil
}

// canonicalJSON encodes a value decoded by decodeJSON as the Appendices'
// "Canonical JSON": shortest UTF-8 form, object keys sorted by code point
// (byte order of UTF-8 is code point order), integers only, no -0.
func canonicalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	if err := writeCanonical(&b, v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func writeCanonical(b *bytes.Buffer, v any) error {
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		if x {
			b.WriteString("true")
		} else {
			b.WriteString("false")
		}
	case string:
		writeCanonicalString(b, x)
	case json.Number:
		n, err := canonicalInt(string(x))
		if err != nil {
			return err
		}
		b.WriteString(n)
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeCanonical(b, e); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeCanonicalString(b, k)
			b.WriteByte(':')
			if err := writeCanonical(b, x[k]); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	default:
		return fmt.Errorf("unexpected JSON value of type %T", v)
	}
	return nil
}

// canonicalInt renders a JSON number as canonical JSON's integer: exponents
// are expanded, -0 becomes 0, and fractions or values beyond ±(2^53-1) are
// errors because canonical JSON cannot represent them.
func canonicalInt(s string) (string, error) {
	if !strings.ContainsAny(s, ".eE") {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n > maxSafeInt || n < -maxSafeInt {
			return "", fmt.Errorf("number %s is outside canonical JSON's range ±(2^53-1)", s)
		}
		return strconv.FormatInt(n, 10), nil
	}
	// big.Rat would expand an exponent like 1e999999999 into a number of
	// that many digits; a hostile key server must not make the probe do that.
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		exp, err := strconv.Atoi(strings.TrimPrefix(s[i+1:], "+"))
		if err != nil || exp > 30 || exp < -30 {
			if strings.Trim(s[:i], "-+0.") == "" {
				return "0", nil
			}
			return "", fmt.Errorf("number %s is outside canonical JSON's range ±(2^53-1)", s)
		}
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok || !r.IsInt() {
		return "", fmt.Errorf("number %s is not an integer; canonical JSON has no fractions", s)
	}
	n := r.Num()
	if n.CmpAbs(big.NewInt(maxSafeInt)) > 0 {
		return "", fmt.Errorf("number %s is outside canonical JSON's range ±(2^53-1)", s)
	}
	return n.String(), nil
}

func writeCanonicalString(b *bytes.Buffer, s string) {
	const hex = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if c < 0x20 {
				b.WriteString(`\u00`)
				b.WriteByte(hex[c>>4])
				b.WriteByte(hex[c&0xf])
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('"')
}

// decodeBase64 accepts unpadded and padded standard base64, as the
// Appendices ask decoders to.
func decodeBase64(s string) ([]byte, error) {
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

// finding is one verdict about a response, placed by the caller.
type finding struct {
	Status Status
	Msg    string
	Fix    string
}

// checkKeyResponse checks a /_matrix/key/v2/server body the way a remote
// server must before trusting it: server_name is the server name, the keys
// are valid for at least another hour, there is an ed25519 key, and every
// signature by a listed key verifies over the canonical JSON.
func checkKeyResponse(body []byte, serverName string, now time.Time) []finding {
	var out []finding
	fail := func(fix, format string, args ...any) []finding {
		return append(out, finding{StatusFail, fmt.Sprintf(format, args...), fix})
	}
	v, err := decodeJSON(body)
	if err != nil {
		return fail("check the reverse proxy in front of the homeserver passes /_matrix/key/ through", "the key response is not JSON: %v", err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return fail("check the reverse proxy in front of the homeserver passes /_matrix/key/ through", "the key response is a JSON %s, not an object", jsonKind(v))
	}

	sn, _ := obj["server_name"].(string)
	if sn != serverName {
		out = append(out, finding{StatusFail,
			fmt.Sprintf("the key response says server_name %q, not %q: remote servers reject it", sn, serverName),
			fmt.Sprintf("the delegation points at a homeserver configured for another name; set server_name: %q in its configuration, or delegate to the right homeserver", serverName)})
	} else {
		out = append(out, finding{StatusOK, fmt.Sprintf("the key response is for server_name %q", sn), ""})
	}

	switch n, ok := obj["valid_until_ts"].(json.Number); {
	case !ok:
		out = append(out, finding{StatusFail, "the key response has no numeric valid_until_ts", "upgrade the homeserver; this field is required"})
	default:
		ms, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil {
			out = append(out, finding{StatusFail, fmt.Sprintf("valid_until_ts %s is not an integer", n), "upgrade the homeserver; this field must be milliseconds since 1970"})
			break
		}
		until := time.UnixMilli(ms).UTC()
		left := until.Sub(now)
		switch {
		case left <= 0:
			out = append(out, finding{StatusFail, fmt.Sprintf("the keys expired at %s (valid_until_ts %d)", until.Format(time.RFC3339), ms),
				"check the homeserver's clock and restart it so it republishes its keys"})
		case left < time.Hour:
			out = append(out, finding{StatusWarn, fmt.Sprintf("the keys expire within the hour, at %s", until.Format(time.RFC3339)),
				"check the homeserver's clock; keys are normally published valid for a day or more"})
		default:
			out = append(out, finding{StatusOK, fmt.Sprintf("the keys are valid until %s", until.Format(time.RFC3339)), ""})
		}
	}

	keys := map[string]ed25519.PublicKey{}
	vk, _ := obj["verify_keys"].(map[string]any)
	var ids []string
	for id, kv := range vk {
		alg, _, _ := strings.Cut(id, ":")
		if alg != "ed25519" {
			continue
		}
		ko, _ := kv.(map[string]any)
		ks, _ := ko["key"].(string)
		raw, err := decodeBase64(ks)
		if err != nil || len(raw) != ed25519.PublicKeySize {
			out = append(out, finding{StatusFail, fmt.Sprintf("verify key %s is not a base64 ed25519 public key", id), "fix the homeserver's signing key file"})
			continue
		}
		keys[id] = raw
		ids = append(ids, id)
	}
	sort.Strings(ids)
	if len(keys) == 0 {
		return append(out, finding{StatusFail, "the key response lists no ed25519 verify key", "check the homeserver's signing key configuration"})
	}

	sigs, _ := obj["signatures"].(map[string]any)
	mine, _ := sigs[serverName].(map[string]any)
	if len(mine) == 0 {
		return append(out, finding{StatusFail, fmt.Sprintf("the key response is not signed by %q", serverName), "the homeserver's server_name must be the server name"})
	}
	signed := map[string]any{}
	for k, v := range obj {
		if k != "signatures" && k != "unsigned" {
			signed[k] = v
		}
	}
	msg, err := canonicalJSON(signed)
	if err != nil {
		return append(out, finding{StatusFail, "the key response cannot be put in canonical JSON, so no signature can verify: " + err.Error(), "upgrade the homeserver"})
	}
	var sigIDs []string
	for id := range mine {
		sigIDs = append(sigIDs, id)
	}
	sort.Strings(sigIDs)
	verified := 0
	for _, id := range sigIDs {
		alg, _, _ := strings.Cut(id, ":")
		if alg != "ed25519" {
			continue
		}
		key, ok := keys[id]
		if !ok {
			out = append(out, finding{StatusWarn, fmt.Sprintf("signature %s is by a key not in verify_keys; it cannot be checked", id), ""})
			continue
		}
		ss, _ := mine[id].(string)
		sig, err := decodeBase64(ss)
		if err != nil || len(sig) != ed25519.SignatureSize || !ed25519.Verify(key, msg, sig) {
			out = append(out, finding{StatusFail, fmt.Sprintf("signature %s does not verify over the canonical JSON", id),
				"something rewrites the response, or the homeserver publishes a key it does not sign with; check its signing key and any proxy"})
			continue
		}
		verified++
	}
	if verified == 0 {
		return append(out, finding{StatusFail, "no signature by a listed verify key: remote servers reject the keys", "check the homeserver's signing key configuration"})
	}
	out = append(out, finding{StatusOK, fmt.Sprintf("ed25519 key(s) %s; %d signature(s) verified", strings.Join(ids, ", "), verified), ""})
	return out
}

package e2e

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
)

// homeserver is one Dendrite: its server name, where it listens (host
// resolves to ip through the world's DNS), and its files.
type homeserver struct {
	name, host, ip string
	dir            string
	secret         string // registration shared secret
	cert, key      string
}

func (h *homeserver) label() string { return "dendrite-" + h.name }
func (h *homeserver) base() string  { return "https://" + h.host + ":8448" }

// newHomeserver writes the configuration and signing key of a Dendrite
// for server name name, listening on ip:8448 with the certificate given.
func (w *world) newHomeserver(name, host, ip, cert, key string) *homeserver {
	w.t.Helper()
	h := &homeserver{name: name, host: host, ip: ip, dir: filepath.Join(w.dir, "dendrite-"+name), secret: rand.Text(), cert: cert, key: key}
	_, signing, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		w.t.Fatal(err)
	}
	w.write(h.label()+"/matrix_key.pem", string(pem.EncodeToMemory(&pem.Block{
		Type: "MATRIX PRIVATE KEY", Headers: map[string]string{"Key-ID": "ed25519:e2e"}, Bytes: signing.Seed(),
	})))
	db := func(n string) string {
		return fmt.Sprintf("database:\n    connection_string: \"file:%s/%s.db\"", h.dir, n)
	}
	w.write(h.label()+"/dendrite.yaml", fmt.Sprintf(`version: 2
global:
  server_name: %[1]s
  private_key: %[2]s/matrix_key.pem
  trusted_third_party_id_servers: []
  jetstream:
    storage_path: %[2]s/jetstream
    in_memory: false
    disable_tls_validation: false
  presence:
    enable_inbound: false
    enable_outbound: false
  report_stats:
    enabled: false
app_service_api:
  disable_tls_validation: false
client_api:
  registration_disabled: true
  registration_shared_secret: %[3]q
  rate_limiting:
    enabled: false
federation_api:
  %[4]s
  key_perspectives: []
  disable_tls_validation: false
key_server:
  %[5]s
media_api:
  %[6]s
  base_path: %[2]s/media
mscs:
  %[7]s
relay_api:
  %[8]s
room_server:
  %[9]s
sync_api:
  %[10]s
  search:
    enabled: false
user_api:
  bcrypt_cost: 4
  account_%[11]s
logging:
- type: std
  level: info
`, name, h.dir, h.secret, db("federationapi"), db("keyserver"), db("mediaapi"), db("mscs"), db("relayapi"),
		db("roomserver"), db("syncapi"), db("userapi")))
	return h
}

// startHomeserver runs Dendrite, trusting only Pebble's root for every
// TLS connection it makes (Go reads SSL_CERT_FILE), and waits until its
// client API answers over HTTPS at its host name.
func (w *world) startHomeserver(h *homeserver) {
	w.t.Helper()
	p := w.start(h.label(), []string{"SSL_CERT_FILE=" + w.root}, filepath.Join(w.bin, "dendrite"),
		"-config", filepath.Join(h.dir, "dendrite.yaml"),
		"-https-bind-address", h.ip+":8448", "-http-bind-address", h.ip+":8008",
		"-tls-cert", h.cert, "-tls-key", h.key)
	w.eventually(h.label()+" answering /versions", p, func() error {
		return w.call(h, "", "GET", "/_matrix/client/versions", nil, nil)
	})
}

// user is a logged-in account on a homeserver.
type user struct {
	w     *world
	hs    *homeserver
	id    string
	token string
}

// register creates an account with the registration shared secret, as
// Dendrite's create-account and Synapse's register_new_matrix_user do.
func (w *world) register(h *homeserver, name string) *user {
	w.t.Helper()
	var nonce struct{ Nonce string }
	if err := w.call(h, "", "GET", "/_synapse/admin/v1/register", nil, &nonce); err != nil {
		w.t.Fatal(err)
	}
	password := rand.Text()
	mac := hmac.New(sha1.New, []byte(h.secret))
	mac.Write([]byte(strings.Join([]string{nonce.Nonce, name, password, "notadmin"}, "\x00")))
	var reg struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
	}
	body := map[string]any{"nonce": nonce.Nonce, "username": name, "password": password, "admin": false, "mac": hex.EncodeToString(mac.Sum(nil))}
	if err := w.call(h, "", "POST", "/_synapse/admin/v1/register", body, &reg); err != nil {
		w.t.Fatal(err)
	}
	if want := "@" + name + ":" + h.name; reg.UserID != want {
		w.t.Fatalf("registered %q, want %q", reg.UserID, want)
	}
	return &user{w: w, hs: h, id: reg.UserID, token: reg.AccessToken}
}

// call does one Client-Server API request over HTTPS and decodes the JSON
// reply into out (if not nil); a status other than 200 is an error.
func (w *world) call(h *homeserver, token, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, h.base()+path, body)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := w.directClient().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, data)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

func (u *user) call(method, path string, in, out any) error {
	return u.w.call(u.hs, u.token, method, path, in, out)
}

// createRoom makes a public room and returns its ID.
func (u *user) createRoom() string {
	u.w.t.Helper()
	var r struct {
		RoomID string `json:"room_id"`
	}
	if err := u.call("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": "e2e"}, &r); err != nil {
		u.w.t.Fatal(err)
	}
	return r.RoomID
}

// join joins room through the server named via: over federation when the
// room lives elsewhere.
func (u *user) join(room, via string) error {
	return u.call("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(via), map[string]any{}, nil)
}

// send posts a text message to room.
func (u *user) send(room, text string) {
	u.w.t.Helper()
	path := fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/%s", url.PathEscape(room), rand.Text())
	if err := u.call("PUT", path, map[string]any{"msgtype": "m.text", "body": text}, nil); err != nil {
		u.w.t.Fatal(err)
	}
}

// sees reports whether the latest messages of room, as u's homeserver
// has them, include text sent by from.
func (u *user) sees(room, from, text string) error {
	var r struct {
		Chunk []struct {
			Type    string
			Sender  string
			Content struct{ Body string }
		}
	}
	if err := u.call("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=50", nil, &r); err != nil {
		return err
	}
	for _, e := range r.Chunk {
		if e.Type == "m.room.message" && e.Sender == from && e.Content.Body == text {
			return nil
		}
	}
	return fmt.Errorf("%s has no message %q from %s in %s (%d events)", u.hs.name, text, from, room, len(r.Chunk))
}

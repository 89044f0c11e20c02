package httpserver

import (
	"bytes"
	"strings"
	"testing"

	"github.com/signpost-dev/signpost/internal/manyzones"
)

// TestReloadReusesDocuments: a model that changed one document of one of
// many names gets an index that shares every other site, and the other
// two documents of that name, with the index before it.
func TestReloadReusesDocuments(t *testing.T) {
	var b bytes.Buffer
	if err := manyzones.Write(&b, 20, manyzones.Options{}); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	before := newIndex(mustParse(t, text), nil)
	changed := strings.Replace(text, `page = "https://provider.example/support/3"`, `page = "https://provider.example/help/3"`, 1)
	after := newIndex(mustParse(t, changed), before)
	name := manyzones.Origin(3)
	for n, st := range after.sites {
		if same := before.sites[n] == st; same != (n != name) {
			t.Errorf("site %s: reused %v, want %v", n, same, n != name)
		}
	}
	st, old := after.sites[name], before.sites[name]
	if st.docs[docServer] != old.docs[docServer] || st.docs[docClient] != old.docs[docClient] {
		t.Error("unchanged server or client document of the changed name was rebuilt")
	}
	if got, want := string(st.docs[docSupport].ok.body), `{"contacts":[{"email_address":"admin@`+name+`","matrix_id":"@admin:`+name+`","role":"m.role.admin"}],"support_page":"https://provider.example/help/3"}`; got != want {
		t.Errorf("support document %s, want %s", got, want)
	}
}

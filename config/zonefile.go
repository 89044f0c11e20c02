package config

import (
	"fmt"
	"io"
	"strings"
)

// WriteMasterFile writes the zone in RFC 1035 master-file format, one
// record per line with absolute owner names, so that named-checkzone,
// kzonecheck, NSD and Knot load it as it is.
func (z *Zone) WriteMasterFile(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s\n", z.Origin)
	for _, rr := range z.Records {
		b.WriteString(rr.String())
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

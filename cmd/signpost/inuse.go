package main

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

// explainInUse returns err, which came from binding addr (the value of the
// config key key), with what commonly holds such an address and how to
// fix it added when the address is in use; any other error is returned as
// it is.
//
// Port 53 is the common case: on Debian and Ubuntu systemd-resolved's stub
// listener holds 127.0.0.53:53 and 127.0.0.54:53, and binding the wildcard
// address (the default [::]:53) on the same port collides with it.
func explainInUse(key, addr string, err error) error {
	if !errors.Is(err, syscall.EADDRINUSE) {
		return err
	}
	host, port, _ := net.SplitHostPort(addr)
	wildcard := host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified()
	var hint string
	switch key {
	case "dns.listen":
		if wildcard {
			hint = fmt.Sprintf("port %s is taken on some address of this host, commonly by systemd-resolved's stub listener on 127.0.0.53 and 127.0.0.54 (the Debian and Ubuntu default), which a wildcard address such as %s collides with, or by another DNS server (bind9, unbound, dnsmasq); "+
				"listen on this host's public addresses only, e.g. dns.listen = ['203.0.113.10:%[1]s'], or set DNSStubListener=no in /etc/systemd/resolved.conf and restart systemd-resolved", port, addr)
		} else {
			hint = fmt.Sprintf("another program holds %s, commonly another DNS server (bind9, unbound, dnsmasq), or systemd-resolved on 127.0.0.53 and 127.0.0.54; stop it, or list another address in dns.listen", addr)
		}
	default:
		hint = fmt.Sprintf("another program holds %s, commonly a web server (nginx, Apache, Caddy); stop it, or move %s to another address and let the web server proxy /.well-known/matrix/ to signpost's plain HTTP listener (README, scenario S3)", addr, key)
	}
	return fmt.Errorf("%w; %s (ss -lntup 'sport = :%s' shows who)", err, hint, port)
}

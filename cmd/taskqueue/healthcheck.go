package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// healthcheckTimeout bounds the probe of `taskqueue healthcheck`.
const healthcheckTimeout = 3 * time.Second

// healthcheck is the `taskqueue healthcheck` subcommand, for images with
// no shell (Docker's HEALTHCHECK): it GETs /healthz on the address the
// service is configured to listen on (same flags and environment) and
// returns nil on 200. Any other answer, or none, is an error (exit 1).
func healthcheck(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := parseConfig(args, getenv, stdout)
	if err != nil {
		return configError(err)
	}
	host, port, _ := net.SplitHostPort(cfg.Addr)
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	ctx, cancel := context.WithTimeout(ctx, healthcheckTimeout)
	defer cancel()
	scheme, client := "http", http.DefaultClient
	if cfg.TLSCert != "" {
		// The service's own port on loopback: its certificate names its
		// public host, not this address, so it is not checked here.
		scheme = "https"
		transport := http.DefaultTransport.(*http.Transport).Clone()
		transport.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // probing our own loopback port
		client = &http.Client{Transport: transport}
	}
	url := scheme + "://" + net.JoinHostPort(host, port) + "/healthz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %d", url, resp.StatusCode)
	}
	fmt.Fprintln(stdout, "ok")
	return nil
}

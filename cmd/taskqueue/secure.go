package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/taskqueue/taskqueue/adapters/apikeys"
	"github.com/taskqueue/taskqueue/domain"
)

// keygen is the `taskqueue keygen` subcommand: it prints a new random API
// key once, and the line that admits it in the --api-keys-file. The key
// itself is stored nowhere.
func keygen(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("taskqueue keygen", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	name := fs.String("name", "", "the client's name, logged with what it does (1 to 64 letters, digits, '.', '_', '-')")
	rolesFlag := fs.String("roles", "", "comma-separated roles: submit, read, admin (admin implies the others)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "Usage: taskqueue keygen --name NAME --roles ROLES\n\nPrints a new API key (shown once) and the line to add to the --api-keys-file.")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return errHelp
		}
		return &exitError{code: 2, err: fmt.Errorf("keygen: %w", flagError(err))}
	}
	if fs.NArg() > 0 {
		return &exitError{code: 2, err: fmt.Errorf("keygen: unexpected argument %q", fs.Arg(0))}
	}
	if *name == "" || *rolesFlag == "" {
		return &exitError{code: 2, err: errors.New("keygen: give --name and --roles, such as: taskqueue keygen --name billing --roles submit,read")}
	}
	roles, err := domain.ParseRoles(*rolesFlag)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("keygen: %w", err)}
	}
	key, line, err := apikeys.Generate(*name, roles)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("keygen: %w", err)}
	}
	fmt.Fprintf(stdout, "# API key for %q (roles %s). It is shown only now: give it to the client; only its hash is kept.\n%s\n", *name, roles, key)
	fmt.Fprintf(stdout, "# Add this line to the --api-keys-file, then send SIGHUP to the service (or restart it):\n%s\n", line)
	return nil
}

// certificate is the TLS certificate served, swapped whole on reload.
type certificate struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

func loadCertificate(certFile, keyFile string) (*certificate, error) {
	c := &certificate{certFile: certFile, keyFile: keyFile}
	if err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// reload reads the files again; on error the certificate in use stays.
func (c *certificate) reload() error {
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("tls-cert/tls-key: %w", err)
	}
	c.cur.Store(&pair)
	return nil
}

func (c *certificate) config() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.cur.Load(), nil },
	}
}

package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// probeTimeout bounds a -probe request. It stays below the healthcheck
// timeouts (3 s in the Dockerfile and docker-compose.yml), so a hung server
// is reported by the probe with a reason rather than killed by the runtime.
const probeTimeout = 2 * time.Second

// probeBodyMax is what a probe reads of the answer before closing it.
const probeBodyMax = 4 << 10

// isProbe reports whether the command line asks for the probe mode:
// "-probe URL" (or -probe=URL, --probe) as the first argument.
func isProbe(args []string) bool {
	if len(args) == 0 {
		return false
	}
	name, _, _ := strings.Cut(strings.TrimLeft(args[0], "-"), "=")
	return strings.HasPrefix(args[0], "-") && name == "probe"
}

// probeMain runs "merch-store -probe URL": one GET, exit status 0 on a 2xx
// answer, 1 otherwise (the reason on stderr), 2 for a bad command line. It
// reads no environment and starts nothing, so the distroless image, which
// has no shell or curl, can use the server's own binary as its
// HEALTHCHECK.
func probeMain(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("merch-store", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("probe", "", fmt.Sprintf("GET this URL within %v; exit 0 on 2xx, 1 otherwise", probeTimeout))
	if err := fs.Parse(args); err != nil || *url == "" || fs.NArg() > 0 {
		fmt.Fprintf(stderr, "usage: merch-store -probe URL (GET URL within %v; exit 0 on 2xx, 1 otherwise)\n", probeTimeout)
		return 2
	}
	if err := probe(*url, probeTimeout); err != nil {
		fmt.Fprintln(stderr, "merch-store: probe:", err)
		return 1
	}
	return 0
}

// probe GETs url within timeout and returns nil for a 2xx answer. It
// ignores proxy settings from the environment (a healthcheck asks the
// process itself) and does not follow redirects (it checks this URL).
func probe(url string, timeout time.Duration) error {
	c := &http.Client{
		Timeout:       timeout,
		Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, probeBodyMax))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

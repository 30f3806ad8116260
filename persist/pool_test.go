package persist

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestConnectTimeoutSharedByHosts: a multi-host URL (the primary is
// whichever host answers read-write) gives each host a share of 4 s, so a
// hung first host leaves time to reach the next within one journal
// attempt (5 s); one host keeps 5 s; the URL's own connect_timeout wins.
func TestConnectTimeoutSharedByHosts(t *testing.T) {
	for _, c := range []struct {
		url  string
		want time.Duration
	}{
		{"postgres://u@h1:5432/db", 5 * time.Second},
		{"postgres://u@h1:5432,h2:5433/db?target_session_attrs=read-write", 2 * time.Second},
		{"postgres://u@h1:5432,h2:5433/db?sslmode=prefer", 2 * time.Second}, // a TLS fallback per host is not a host
		{"postgres://u@h1:5432,h2:5433,h3:5434/db", 4 * time.Second / 3},
		{"postgres://u@h1,h2,h3,h4,h5,h6/db", time.Second},
	} {
		cfg, err := pgconn.ParseConfig(c.url)
		if err != nil {
			t.Fatal(err)
		}
		if got := defaultConnectTimeout(hostCount(cfg)); got != c.want {
			t.Errorf("%s: %v, want %v", c.url, got, c.want)
		}
	}
	for url, want := range map[string]string{
		"postgres://u@h1:5432/db":                 "pgx5://u@h1:5432/db?connect_timeout=5",
		"postgres://u@h1:5432,h2:5433/db?x=y":     "pgx5://u@h1:5432,h2:5433/db?x=y&connect_timeout=2",
		"postgres://u@h1,h2/db?connect_timeout=9": "pgx5://u@h1,h2/db?connect_timeout=9",
	} {
		if got := migrateURL(url); got != want {
			t.Errorf("migrateURL(%s) = %s, want %s", url, got, want)
		}
	}
	if !strings.HasPrefix(migrateURL("postgresql://u@h/db"), "pgx5://") {
		t.Error("postgresql:// not rewritten")
	}
}

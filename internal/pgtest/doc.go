// Package pgtest starts throwaway PostgreSQL servers for tests and local
// development.
//
// A Cluster is a complete, private PostgreSQL instance: Start creates a fresh
// directory under os.TempDir(), runs initdb in it (trust authentication for
// the "postgres" role, UTF8, locale C), starts the server as a child process
// of the calling program, waits until it accepts connections and creates the
// database "merch". Close shuts the server down and deletes the directory.
//
// The server listens on 127.0.0.1 only (on Options.Port, or a free port when
// that is zero) and keeps its unix socket inside the cluster directory, so it
// needs nothing from /var/run/postgresql and never collides with other
// clusters. The package depends only on the standard library; it drives the
// PostgreSQL client programs (pg_isready, psql) from Options.BinDir for its
// own readiness checks and for CreateDatabase.
//
// # Running as root
//
// PostgreSQL refuses to run as root. When the calling process has effective
// uid 0, initdb and the server are run as the "postgres" OS user (the
// equivalent of runuser -u postgres, done with syscall.Credential so that no
// extra process sits between the caller and the postmaster) and the cluster
// directory is chowned to that user. The directory is created under
// os.TempDir() rather than in testing.T.TempDir() because the postgres user
// must be able to traverse every parent directory; /tmp is world-traversable,
// T.TempDir() is not.
//
// # Lifetime
//
// The server is a child process started with a parent-death signal of
// SIGQUIT, so if the test binary is killed (for example by go test -timeout)
// the server performs an immediate shutdown instead of lingering. The cluster
// directory is left behind in that case, since nothing is left to remove it.
//
// # Concurrency
//
// URL, Port and DataDir are safe for concurrent use. Stop, Start,
// CreateDatabase and Close take an internal lock, so calling them from
// several goroutines does not corrupt the Cluster, but a Cluster is not
// designed for concurrent Stop/Start: racing calls leave the server in
// whichever state the last one produced. Distinct Clusters are independent
// and may be used in parallel tests.
//
// Typical use:
//
//	func TestSomething(t *testing.T) {
//		pg := pgtest.MustStart(t, pgtest.Options{Settings: map[string]string{"fsync": "off"}})
//		db, err := pgx.Connect(ctx, pg.URL())
//		...
//	}
package pgtest

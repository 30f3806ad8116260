package pgtest

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"merch/internal/logtest"
)

// psqlURL runs sql with psql against a connection URL, exactly as a user of
// Cluster.URL would.
func psqlURL(t *testing.T, c *Cluster, connURL, sql string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(c.binDir, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql, connURL)
	cmd.Env = append(cleanEnv(), "PGCONNECT_TIMEOUT=5")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("psql %s -c %q: %w: %s", connURL, sql, err, stderr.String())
	}
	return strings.TrimSpace(stdout.String()), nil
}

func mustQuery(t *testing.T, c *Cluster, connURL, sql, want string) {
	t.Helper()
	got, err := psqlURL(t, c, connURL, sql)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("%s: got %q, want %q", sql, got, want)
	}
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	c, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			c.Close()
		}
	}()

	wantURL := "postgres://postgres@127.0.0.1:" + strconv.Itoa(c.Port()) + "/merch?sslmode=disable"
	if c.URL() != wantURL {
		t.Fatalf("URL() = %q, want %q", c.URL(), wantURL)
	}
	if c.Port() <= 0 {
		t.Fatalf("Port() = %d", c.Port())
	}
	if _, err := os.Stat(filepath.Join(c.DataDir(), "PG_VERSION")); err != nil {
		t.Fatalf("DataDir() %s is not a data directory: %v", c.DataDir(), err)
	}

	mustQuery(t, c, c.URL(), "select 1", "1")
	mustQuery(t, c, c.URL(), "select current_database() || ' ' || current_user || ' ' || pg_encoding_to_char(encoding) || ' ' || datcollate from pg_database where datname = current_database()",
		"merch postgres UTF8 C")
	mustQuery(t, c, c.URL(), "show listen_addresses", "127.0.0.1")
	mustQuery(t, c, c.URL(), "show max_connections", "100")

	// The server must not run as root (it would refuse to), and when we
	// are root it must run as the postgres user.
	pid := c.proc.cmd.Process.Pid
	fi, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid)))
	if err != nil {
		t.Fatal(err)
	}
	uid := fi.Sys().(*syscall.Stat_t).Uid
	if os.Geteuid() == 0 && uid == 0 {
		t.Fatalf("postmaster %d runs as root", pid)
	}
	if os.Geteuid() != 0 && int(uid) != os.Geteuid() {
		t.Fatalf("postmaster %d runs as uid %d, want %d", pid, uid, os.Geteuid())
	}

	mustQuery(t, c, c.URL(), "create table t (x int); insert into t values (42); select count(*) from t", "1")

	if err := c.Stop("immediate"); err != nil {
		t.Fatal(err)
	}
	if _, err := psqlURL(t, c, c.URL(), "select 1"); err == nil {
		t.Fatal("query succeeded after Stop")
	}
	if conn, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port()))); err == nil {
		conn.Close()
		t.Fatal("port still accepts TCP connections after Stop")
	}
	if err := c.Stop("immediate"); err == nil {
		t.Fatal("Stop on a stopped server: want error")
	}
	if _, err := c.CreateDatabase("x"); err == nil {
		t.Fatal("CreateDatabase on a stopped server: want error")
	}

	// Immediate stop means crash recovery on the next start; the committed
	// row must survive it.
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	mustQuery(t, c, c.URL(), "select x from t", "42")
	if err := c.Start(); err != nil { // already running: no-op
		t.Fatal(err)
	}

	for _, mode := range []string{"fast", "smart", "immediate"} {
		if err := c.Stop(mode); err != nil {
			t.Fatalf("Stop(%q): %v", mode, err)
		}
		if _, err := psqlURL(t, c, c.URL(), "select 1"); err == nil {
			t.Fatalf("query succeeded after Stop(%q)", mode)
		}
		if err := c.Start(); err != nil {
			t.Fatalf("Start after Stop(%q): %v", mode, err)
		}
		mustQuery(t, c, c.URL(), "insert into t values (1); select count(*) from t where x = 42", "1")
	}
	mustQuery(t, c, c.URL(), "select count(*) from t", "4")

	if err := c.Stop("bogus"); err == nil {
		t.Fatal("Stop(bogus): want error")
	}

	u, err := c.CreateDatabase("second")
	if err != nil {
		t.Fatal(err)
	}
	if want := "postgres://postgres@127.0.0.1:" + strconv.Itoa(c.Port()) + "/second?sslmode=disable"; u != want {
		t.Fatalf("CreateDatabase URL = %q, want %q", u, want)
	}
	mustQuery(t, c, u, "select current_database()", "second")
	mustQuery(t, c, u, "select to_regclass('t') is null", "t") // a different database indeed

	u, err = c.CreateDatabase(`we"ird db`)
	if err != nil {
		t.Fatal(err)
	}
	mustQuery(t, c, u, "select current_database()", `we"ird db`)

	if _, err := c.CreateDatabase("second"); err == nil {
		t.Fatal("creating an existing database: want error")
	} else if !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("error does not say why: %v", err)
	}

	root := c.root
	port := c.Port()
	c.Close()
	closed = true
	if _, err := os.Stat(root); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("cluster dir %s still exists after Close (stat: %v)", root, err)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		// pid reuse within this test is vanishingly unlikely
		t.Fatalf("a process with the first postmaster's pid %d still exists", pid)
	}
	if _, err := psqlURL(t, c, c.URL(), "select 1"); err == nil {
		t.Fatalf("query on port %d succeeded after Close", port)
	}
	c.Close() // idempotent
	if err := c.Start(); err == nil {
		t.Fatal("Start after Close: want error")
	}
}

func TestMustStartSettingsAndLog(t *testing.T) {
	t.Parallel()
	var log logtest.Buffer
	c := MustStart(t, Options{
		Settings: map[string]string{"fsync": "off", "work_mem": "7MB", "application_name": "pg test"},
		Log:      &log,
	})
	mustQuery(t, c, c.URL(), "show work_mem", "7MB")
	mustQuery(t, c, c.URL(), "show fsync", "off")
	if !strings.Contains(log.String(), "database system is ready to accept connections") {
		t.Fatalf("server output did not reach Options.Log:\n%s", log.String())
	}
	if _, err := os.Stat(filepath.Join(c.root, "postgres.log")); err == nil {
		t.Fatal("a log file was created although Options.Log was set")
	}
	if err := c.Stop("fast"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "database system is shut down") {
		t.Fatalf("shutdown not logged:\n%s", log.String())
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	mustQuery(t, c, c.URL(), "select 1", "1")
}

func TestDefaultLogFile(t *testing.T) {
	t.Parallel()
	c := MustStart(t, Options{})
	b, err := os.ReadFile(filepath.Join(c.root, "postgres.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "database system is ready to accept connections") {
		t.Fatalf("log file lacks the ready message:\n%s", b)
	}
}

func TestReservedSetting(t *testing.T) {
	t.Parallel()
	c, err := Start(Options{Settings: map[string]string{"port": "1"}})
	if err == nil {
		c.Close()
		t.Fatal("want error for a reserved setting")
	}
}

// Not parallel: parallel tests only start once the sequential ones are done,
// so the pgtest-* directory listing below is not disturbed by other tests.
func TestPortInUseReportsLog(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port

	pattern := filepath.Join(os.TempDir(), "pgtest-*")
	before, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Start(Options{Port: port})
	if err == nil {
		c.Close()
		t.Fatalf("Start on busy port %d succeeded", port)
	}
	// The error must carry the server's own explanation.
	if !strings.Contains(err.Error(), "could not bind") {
		t.Fatalf("error lacks the server log tail: %v", err)
	}
	after, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("failed Start left a directory behind: before %v, after %v", before, after)
	}
}

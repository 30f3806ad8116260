package pgtest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	defaultBinDir = "/usr/lib/postgresql/15/bin"
	superuser     = "postgres" // both the OS user (when root) and the database role
	defaultDB     = "merch"
	listenAddr    = "127.0.0.1"

	startTimeout = 30 * time.Second // initdb excluded; covers crash recovery after Stop("immediate")
	stopTimeout  = 60 * time.Second // same default as pg_ctl stop
	killTimeout  = 10 * time.Second // after SIGKILL, as a last resort in Close
	pollInterval = 20 * time.Millisecond
	portAttempts = 5 // when Options.Port is 0 and the picked port is taken meanwhile

	tailBytes = 16 << 10
	tailLines = 40

	// sun_path is 108 bytes including the terminating NUL; PostgreSQL needs
	// room for "/.s.PGSQL.<port>".
	maxSocketPath = 107
)

// reserved settings are managed by the Cluster itself.
var reserved = map[string]bool{
	"listen_addresses":        true,
	"port":                    true,
	"unix_socket_directories": true,
}

// Options configure a Cluster. Zero value is usable.
type Options struct {
	BinDir   string            // default: $PGBIN or /usr/lib/postgresql/15/bin
	Port     int               // 0: pick a free TCP port on 127.0.0.1
	Settings map[string]string // extra postgresql.conf settings passed as -c k=v (e.g. "fsync": "off")
	Log      io.Writer         // where server stdout/stderr goes; nil: a log file inside the cluster dir
	// Dir is the parent of the cluster's directory; empty: os.TempDir().
	// Fault tests put it on a file system they can freeze.
	Dir string
}

// Cluster is a throwaway PostgreSQL server with its own data directory. See
// the package documentation for the concurrency rules.
type Cluster struct {
	// Immutable after Start returns.
	binDir   string
	port     int
	root     string // the temporary directory holding everything below
	dataDir  string
	sockDir  string // "" when the path would be too long for a unix socket
	settings []string
	cred     *syscall.Credential // nil: run as the current user
	env      []string
	out      io.Writer // server stdout/stderr: log destination + tail
	logFile  *os.File  // non-nil when we opened the log file ourselves
	tail     *tailBuffer

	mu     sync.Mutex
	proc   *proc // running (or exited but not yet reaped by us) postmaster
	closed bool
}

// proc is one run of the postmaster.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // result of cmd.Wait, valid once done is closed
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Start creates, initialises and starts a new cluster and creates the
// database "merch" in it. The caller must Close the cluster.
func Start(opts Options) (*Cluster, error) {
	binDir := opts.BinDir
	if binDir == "" {
		binDir = os.Getenv("PGBIN")
	}
	if binDir == "" {
		binDir = defaultBinDir
	}
	for _, prog := range []string{"initdb", "postgres", "psql", "pg_isready"} {
		if _, err := os.Stat(filepath.Join(binDir, prog)); err != nil {
			return nil, fmt.Errorf("pgtest: PostgreSQL binaries not found (set Options.BinDir or $PGBIN): %w", err)
		}
	}
	if opts.Port < 0 || opts.Port > 65535 {
		return nil, fmt.Errorf("pgtest: invalid port %d", opts.Port)
	}

	var settings []string
	keys := make([]string, 0, len(opts.Settings))
	for k := range opts.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if reserved[strings.ToLower(k)] {
			return nil, fmt.Errorf("pgtest: setting %q is managed by pgtest and cannot be overridden", k)
		}
		settings = append(settings, "-c", k+"="+opts.Settings[k])
	}

	c := &Cluster{
		binDir:   binDir,
		port:     opts.Port,
		settings: settings,
		env:      cleanEnv(),
		tail:     &tailBuffer{},
	}
	if os.Geteuid() == 0 {
		cred, err := PostgresCredential()
		if err != nil {
			return nil, err
		}
		c.cred = cred
	}

	root, err := os.MkdirTemp(opts.Dir, "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	c.root = root
	c.dataDir = filepath.Join(root, "data")
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()

	c.sockDir = filepath.Join(root, "sock")
	if len(c.sockDir)+len("/.s.PGSQL.65535") > maxSocketPath {
		c.sockDir = "" // TCP only; pgtest never uses the socket itself
	} else if err := os.Mkdir(c.sockDir, 0o700); err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}

	dest := opts.Log
	if dest == nil {
		f, err := os.OpenFile(filepath.Join(root, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("pgtest: %w", err)
		}
		c.logFile = f
		dest = f
	}
	c.out = io.MultiWriter(dest, c.tail)

	if c.cred != nil {
		if err := checkTraversable(root, c.cred); err != nil {
			return nil, err
		}
		if err := ChownR(root, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return nil, fmt.Errorf("pgtest: %w", err)
		}
	}

	if err := c.initdb(); err != nil {
		return nil, err
	}

	pickPort := c.port == 0
	for attempt := 1; ; attempt++ {
		if pickPort {
			if c.port, err = freePort(); err != nil {
				return nil, fmt.Errorf("pgtest: picking a port: %w", err)
			}
		}
		mark := c.tail.mark()
		err = c.startLocked()
		if err == nil {
			break
		}
		if !pickPort || attempt == portAttempts || !strings.Contains(c.tail.since(mark), "could not bind") {
			return nil, err
		}
		// Someone else grabbed the port between freePort and bind; try another.
	}

	if _, err := c.CreateDatabase(defaultDB); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

// MustStart is Start for tests: it calls tb.Fatal on error and registers
// c.Close with tb.Cleanup. If the test failed, the tail of the server log is
// logged before the cluster is removed.
func MustStart(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	c, err := Start(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("pgtest: tail of server log for %s:\n%s", c.root, c.tail.lastLines(tailLines))
		}
		c.Close()
	})
	return c
}

// URL returns the connection URL of the "merch" database.
func (c *Cluster) URL() string { return c.dbURL(defaultDB) }

// LogTail returns the last 16 KiB the server logged.
func (c *Cluster) LogTail() string { return c.tail.String() }

// Port returns the TCP port the server listens on (on 127.0.0.1).
func (c *Cluster) Port() int { return c.port }

// DataDir returns the server's data directory (PGDATA).
func (c *Cluster) DataDir() string { return c.dataDir }

// Stop shuts the server down with the given pg_ctl shutdown mode ("smart",
// "fast" or "immediate") and waits, for at most a minute, until it has
// exited. It returns an error if the server is not running.
func (c *Cluster) Stop(mode string) error {
	var sig syscall.Signal
	switch mode {
	case "smart":
		sig = syscall.SIGTERM
	case "fast":
		sig = syscall.SIGINT
	case "immediate":
		sig = syscall.SIGQUIT
	default:
		return fmt.Errorf("pgtest: unknown shutdown mode %q (want smart, fast or immediate)", mode)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("pgtest: cluster is closed")
	}
	p := c.proc
	if p == nil {
		return errors.New("pgtest: server is not running")
	}
	if p.exited() {
		c.proc = nil
		return c.errorf("server had already exited (%v)", p.err)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return c.errorf("signalling server: %v", err)
	}
	select {
	case <-p.done:
		c.proc = nil
		return nil
	case <-time.After(stopTimeout):
		return c.errorf("server did not stop within %v (mode %s)", stopTimeout, mode)
	}
}

// Start starts the server again on the same data directory and port and
// waits until it accepts connections. It does nothing if the server is
// already running.
func (c *Cluster) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("pgtest: cluster is closed")
	}
	if c.proc != nil && !c.proc.exited() {
		return nil
	}
	c.proc = nil
	return c.startLocked()
}

// CreateDatabase creates a database and returns its connection URL.
func (c *Cluster) CreateDatabase(name string) (string, error) {
	if name == "" || strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("pgtest: invalid database name %q", name)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return "", errors.New("pgtest: cluster is closed")
	}
	if c.proc == nil || c.proc.exited() {
		return "", errors.New("pgtest: server is not running")
	}
	ident := `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
	if _, err := c.psql("postgres", "CREATE DATABASE "+ident); err != nil {
		return "", c.errorf("creating database %s: %v", ident, err)
	}
	return c.dbURL(name), nil
}

// Close stops the server (immediate mode; killing it if that does not work)
// and removes the cluster directory. It is idempotent.
func (c *Cluster) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	if p := c.proc; p != nil {
		c.proc = nil
		if !p.exited() {
			_ = p.cmd.Process.Signal(syscall.SIGQUIT)
			select {
			case <-p.done:
			case <-time.After(stopTimeout):
				_ = p.cmd.Process.Kill()
				select {
				case <-p.done:
				case <-time.After(killTimeout):
				}
			}
		}
	}
	if c.logFile != nil {
		_ = c.logFile.Close()
	}
	if c.root != "" {
		_ = os.RemoveAll(c.root)
	}
}

func (c *Cluster) dbURL(name string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(superuser),
		Host:     net.JoinHostPort(listenAddr, strconv.Itoa(c.port)),
		Path:     "/" + name,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// errorf builds an error carrying the tail of the server log.
func (c *Cluster) errorf(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	tail := c.tail.lastLines(tailLines)
	if tail == "" {
		return fmt.Errorf("pgtest: %s (server log is empty)", msg)
	}
	return fmt.Errorf("pgtest: %s\n--- server log (last %d lines) ---\n%s", msg, tailLines, tail)
}

// asPostgres makes cmd run as the postgres OS user when we are root.
func (c *Cluster) asPostgres(cmd *exec.Cmd) {
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
}

func (c *Cluster) initdb() error {
	cmd := exec.Command(filepath.Join(c.binDir, "initdb"),
		"-D", c.dataDir,
		"--auth=trust",
		"-U", superuser,
		"--encoding=UTF8",
		"--locale=C",
		"--no-sync",
		"--no-instructions",
	)
	cmd.Env = c.env
	cmd.Dir = c.root
	c.asPostgres(cmd)
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	err := cmd.Run()
	_, _ = c.out.Write(buf.Bytes())
	if err != nil {
		return fmt.Errorf("pgtest: initdb -D %s: %w\n--- initdb output ---\n%s", c.dataDir, err, lastLines(buf.String(), tailLines))
	}
	return nil
}

// startLocked starts the postmaster and waits until it is ready. c.mu must
// be held (or c not yet shared).
func (c *Cluster) startLocked() error {
	args := []string{
		"-D", c.dataDir,
		"-c", "listen_addresses=" + listenAddr,
		"-c", "port=" + strconv.Itoa(c.port),
		"-c", "unix_socket_directories=" + c.sockDir,
		"-c", "max_connections=100",
	}
	args = append(args, c.settings...)
	cmd := exec.Command(filepath.Join(c.binDir, "postgres"), args...)
	cmd.Env = c.env
	cmd.Dir = c.root
	cmd.Stdout = c.out
	cmd.Stderr = c.out
	// Backends inherit the output pipe; do not let a straggler block Wait.
	cmd.WaitDelay = 10 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: c.cred,
		// If this process dies without calling Close, shut the server down
		// (immediate mode) rather than leaving it running.
		Pdeathsig: syscall.SIGQUIT,
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// The parent-death signal fires when the *thread* that forked the
		// child exits, so keep this thread (and nothing else) alive for
		// as long as the server runs.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("pgtest: starting postgres: %w", err)
	}
	c.proc = p
	if err := c.waitReady(p); err != nil {
		if !p.exited() {
			_ = cmd.Process.Signal(syscall.SIGQUIT)
			select {
			case <-p.done:
			case <-time.After(stopTimeout):
				_ = cmd.Process.Kill()
				<-p.done
			}
		}
		c.proc = nil
		return err
	}
	return nil
}

// waitReady waits until the postmaster p reports itself ready in
// postmaster.pid (which also proves that it is our process that owns the
// port) and answers pg_isready over TCP.
func (c *Cluster) waitReady(p *proc) error {
	deadline := time.Now().Add(startTimeout)
	pid := strconv.Itoa(p.cmd.Process.Pid)
	pidFile := filepath.Join(c.dataDir, "postmaster.pid")
	for {
		if b, err := os.ReadFile(pidFile); err == nil {
			lines := strings.Split(string(b), "\n")
			// Line 1 is the PID, line 8 the status (LOCK_FILE_LINE_PM_STATUS).
			if len(lines) >= 8 && strings.TrimSpace(lines[0]) == pid && strings.TrimSpace(lines[7]) == "ready" {
				if c.isReady() {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return c.errorf("server on port %d not ready after %v", c.port, startTimeout)
		}
		select {
		case <-p.done:
			return c.errorf("server exited during start-up (%v)", p.err)
		case <-time.After(pollInterval):
		}
	}
}

func (c *Cluster) isReady() bool {
	cmd := exec.Command(filepath.Join(c.binDir, "pg_isready"), "-q",
		"-h", listenAddr, "-p", strconv.Itoa(c.port), "-U", superuser, "-d", "postgres", "-t", "5")
	cmd.Env = c.env
	return cmd.Run() == nil
}

// psql runs sql against database db over TCP and returns its unaligned,
// tuples-only output.
func (c *Cluster) psql(db, sql string) (string, error) {
	cmd := exec.Command(filepath.Join(c.binDir, "psql"),
		"-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
		"-h", listenAddr, "-p", strconv.Itoa(c.port), "-U", superuser, "-d", db,
		"-c", sql)
	cmd.Env = append(slices.Clip(c.env), "PGCONNECT_TIMEOUT=5")
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("psql: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// cleanEnv is the environment for PostgreSQL programs: ours without
// libpq/locale variables that could redirect or alter them.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PG") || strings.HasPrefix(k, "LC_") || k == "LANG" || k == "LANGUAGE" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// PostgresCredential is the credential of the postgres OS user, for running
// PostgreSQL's programs as it when the tests run as root (PostgreSQL
// refuses root).
func PostgresCredential() (*syscall.Credential, error) {
	u, err := user.Lookup(superuser)
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root, but cannot find the %q OS user to run PostgreSQL as: %w", superuser, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgtest: uid of %q: %w", superuser, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgtest: gid of %q: %w", superuser, err)
	}
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	if ids, err := u.GroupIds(); err == nil {
		for _, id := range ids {
			if g, err := strconv.ParseUint(id, 10, 32); err == nil {
				cred.Groups = append(cred.Groups, uint32(g))
			}
		}
	}
	return cred, nil
}

// checkTraversable reports a clear error if the user in cred cannot reach
// dir because of a parent directory's permissions (for example when TMPDIR
// points into a private directory).
func checkTraversable(dir string, cred *syscall.Credential) error {
	inGroup := func(gid uint32) bool {
		if gid == cred.Gid {
			return true
		}
		for _, g := range cred.Groups {
			if g == gid {
				return true
			}
		}
		return false
	}
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		mode := fi.Mode().Perm()
		var ok2 bool
		switch {
		case st.Uid == cred.Uid:
			ok2 = mode&0o100 != 0
		case inGroup(st.Gid):
			ok2 = mode&0o010 != 0
		default:
			ok2 = mode&0o001 != 0
		}
		if !ok2 {
			return fmt.Errorf("pgtest: the %q OS user cannot traverse %s (mode %#o); point TMPDIR at a world-traversable directory such as /tmp", superuser, d, mode)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// ChownR gives root and everything below it to uid:gid.
func ChownR(root string, uid, gid int) error {
	return filepath.WalkDir(root, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(listenAddr, "0"))
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tailBuffer keeps the last tailBytes bytes written to it.
type tailBuffer struct {
	mu    sync.Mutex
	buf   []byte
	total int64 // bytes ever written
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total += int64(len(p))
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - tailBytes; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// mark returns a position for since.
func (t *tailBuffer) mark() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.total
}

// since returns what was written after mark, as far as it is still kept.
func (t *tailBuffer) since(mark int64) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.total - mark
	if n > int64(len(t.buf)) {
		n = int64(len(t.buf))
	}
	return string(t.buf[int64(len(t.buf))-n:])
}

func (t *tailBuffer) lastLines(n int) string { return lastLines(t.String(), n) }

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

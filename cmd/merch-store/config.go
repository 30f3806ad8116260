package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"merch/persist"
)

// Config is everything the server reads from its environment. Every
// variable can be overridden by the flag of the same name in lower case
// with dashes (HTTP_ADDR → -http-addr). The README lists them all.
type Config struct {
	HTTPAddr          string        // HTTP_ADDR
	AdminAddr         string        // ADMIN_ADDR: /metrics, /healthz, /readyz, pprof
	DatabaseURL       string        // DATABASE_URL (required)
	JWTSecret         string        // JWT_SECRET (required, ≥ 16 bytes)
	JWTTTL            time.Duration // JWT_TTL
	BcryptCost        int           // BCRYPT_COST
	LogLevel          string        // LOG_LEVEL: debug, info, warn, error
	LogFormat         string        // LOG_FORMAT: text or json
	LogRepeatInterval time.Duration // LOG_REPEAT_INTERVAL
	DBMaxConns        int           // DB_MAX_CONNS
	JournalQueue      int           // JOURNAL_QUEUE
	JournalBatch      int           // JOURNAL_BATCH
	RequestTimeout    time.Duration // REQUEST_TIMEOUT
	IdleTTL           time.Duration // ACTOR_IDLE_TTL
	InflightPerUser   int           // INFLIGHT_PER_USER
	InboxSize         int           // ACTOR_INBOX_SIZE
	HashWorkers       int           // HASH_WORKERS
	HashQueue         int           // HASH_QUEUE
	TokenCache        int           // TOKEN_CACHE
	LoginFailures     int           // LOGIN_FAILURES_MAX: per name and client address
	LoginNameFailures int           // LOGIN_FAILURES_NAME_MAX: per name, all addresses
	LoginWindow       time.Duration // LOGIN_FAILURE_WINDOW
	RegisterRate      float64       // REGISTER_RATE: new users per second per client address; 0 = off
	RegisterBurst     int           // REGISTER_BURST
	MaxConns          int           // MAX_CONNS
	MaxConnsPerIP     int           // MAX_CONNS_PER_IP: 0 = off
	StartTimeout      time.Duration // START_TIMEOUT
	ShutdownTimeout   time.Duration // SHUTDOWN_TIMEOUT
	NodeID            string        // NODE_ID: this node's name in a cluster
	InternalAddr      string        // INTERNAL_ADDR: where peers reach it; empty: a node alone
	InternalBind      string        // INTERNAL_BIND: where it listens for them; empty: from INTERNAL_ADDR
	LeaseTTL          time.Duration // SHARD_LEASE_TTL
	// REQUIRE_SYNC_STANDBY: /readyz answers 503 while the primary has no
	// synchronous standby (commits would be acknowledged with one copy).
	RequireSyncStandby bool
}

// DefaultConfig returns the documented defaults (no secrets, no database).
func DefaultConfig() Config {
	return Config{
		HTTPAddr:          ":8080",
		AdminAddr:         "127.0.0.1:8081",
		JWTTTL:            24 * time.Hour,
		BcryptCost:        10,
		LogLevel:          "info",
		LogFormat:         "text",
		LogRepeatInterval: 10 * time.Second,
		DBMaxConns:        16,
		JournalQueue:      16384,
		JournalBatch:      4096,
		RequestTimeout:    time.Second,
		IdleTTL:           10 * time.Minute,
		InflightPerUser:   64,
		InboxSize:         8,
		HashWorkers:       max(1, runtime.GOMAXPROCS(0)/2), // leave cores for serving during a login storm
		HashQueue:         64,
		TokenCache:        100_000,
		LoginFailures:     10,
		LoginNameFailures: 100,
		LoginWindow:       time.Minute,
		RegisterRate:      10,
		RegisterBurst:     50,
		MaxConns:          10_000,
		MaxConnsPerIP:     1_000,
		StartTimeout:      30 * time.Second,
		ShutdownTimeout:   15 * time.Second,
		NodeID:            hostname(),
		LeaseTTL:          6 * time.Second,
	}
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "node"
	}
	return h
}

// setting is one variable: its flag is registered with the documented
// default (never a value from the environment, so -h shows no secret).
type setting struct {
	env    string
	usage  string
	define func(fs *flag.FlagSet, name, usage string)
}

func (c *Config) settings() []setting {
	str := func(p *string) func(*flag.FlagSet, string, string) {
		return func(fs *flag.FlagSet, n, u string) { fs.StringVar(p, n, *p, u) }
	}
	num := func(p *int) func(*flag.FlagSet, string, string) {
		return func(fs *flag.FlagSet, n, u string) { fs.IntVar(p, n, *p, u) }
	}
	float := func(p *float64) func(*flag.FlagSet, string, string) {
		return func(fs *flag.FlagSet, n, u string) { fs.Float64Var(p, n, *p, u) }
	}
	boolean := func(p *bool) func(*flag.FlagSet, string, string) {
		return func(fs *flag.FlagSet, n, u string) { fs.BoolVar(p, n, *p, u) }
	}
	dur := func(p *time.Duration) func(*flag.FlagSet, string, string) {
		return func(fs *flag.FlagSet, n, u string) { fs.DurationVar(p, n, *p, u) }
	}
	return []setting{
		{"HTTP_ADDR", "public listen address (the API)", str(&c.HTTPAddr)},
		{"ADMIN_ADDR", "admin listen address: /metrics, /healthz, /readyz, /debug/pprof", str(&c.AdminAddr)},
		{"DATABASE_URL", "PostgreSQL URL (required)", str(&c.DatabaseURL)},
		{"JWT_SECRET", "HS256 signing secret, at least 16 bytes (required)", str(&c.JWTSecret)},
		{"JWT_TTL", "token lifetime", dur(&c.JWTTTL)},
		{"BCRYPT_COST", "bcrypt cost for new passwords (4…31)", num(&c.BcryptCost)},
		{"LOG_LEVEL", "debug, info, warn or error", str(&c.LogLevel)},
		{"LOG_FORMAT", "text or json", str(&c.LogFormat)},
		{"LOG_REPEAT_INTERVAL", "a repeated log line is written once per interval, then counted", dur(&c.LogRepeatInterval)},
		{"DB_MAX_CONNS", "PostgreSQL pool size", num(&c.DBMaxConns)},
		{"JOURNAL_QUEUE", "records waiting for the journal writer before 503", num(&c.JournalQueue)},
		{"JOURNAL_BATCH", "records per journal transaction at most", num(&c.JournalBatch)},
		{"REQUEST_TIMEOUT", "wait for an actor's answer (writes: durable) before 503", dur(&c.RequestTimeout)},
		{"ACTOR_IDLE_TTL", "idle time before a user's actor is passivated", dur(&c.IdleTTL)},
		{"INFLIGHT_PER_USER", "pending requests per user before 503", num(&c.InflightPerUser)},
		{"ACTOR_INBOX_SIZE", "initial mailbox size per actor", num(&c.InboxSize)},
		{"HASH_WORKERS", "bcrypt worker goroutines", num(&c.HashWorkers)},
		{"HASH_QUEUE", "bcrypt jobs waiting before 503, per queue (verifications, new hashes)", num(&c.HashQueue)},
		{"TOKEN_CACHE", "verified tokens cached", num(&c.TokenCache)},
		{"LOGIN_FAILURES_MAX", "wrong passwords per name and client address per window before 429", num(&c.LoginFailures)},
		{"LOGIN_FAILURES_NAME_MAX", "wrong passwords per name (all addresses) per window before addresses that failed get 429", num(&c.LoginNameFailures)},
		{"LOGIN_FAILURE_WINDOW", "login failure window", dur(&c.LoginWindow)},
		{"REGISTER_RATE", "new users per second per client address (0: no limit)", float(&c.RegisterRate)},
		{"REGISTER_BURST", "new users per client address in a burst", num(&c.RegisterBurst)},
		{"MAX_CONNS", "open client connections at most (lowered to fit the file descriptor limit)", num(&c.MaxConns)},
		{"MAX_CONNS_PER_IP", "open client connections per client address at most (0: no limit; set 0 behind a proxy)", num(&c.MaxConnsPerIP)},
		{"START_TIMEOUT", "bound on start-up (migrations, connecting, claiming the journal)", dur(&c.StartTimeout)},
		{"SHUTDOWN_TIMEOUT", "graceful shutdown bound", dur(&c.ShutdownTimeout)},
		{"NODE_ID", "this node's name in a cluster (must match its HAProxy server name)", str(&c.NodeID)},
		{"INTERNAL_ADDR", "host:port peers reach this node on (forwarded requests, folds); empty: a node alone", str(&c.InternalAddr)},
		{"INTERNAL_BIND", "listen address for peers when it differs from INTERNAL_ADDR (a proxy or relay between); empty: INTERNAL_ADDR's IP, or its port on every interface for a name", str(&c.InternalBind)},
		{"SHARD_LEASE_TTL", "a cluster node's shard lease; a dead node's shards move after it", dur(&c.LeaseTTL)},
		{"REQUIRE_SYNC_STANDBY", "/readyz answers 503 while the primary has no synchronous standby (commits acknowledged with one copy)", boolean(&c.RequireSyncStandby)},
	}
}

// LoadConfig reads the environment, then flags from args (flags win).
// Errors name the variable.
func LoadConfig(args []string, getenv func(string) string) (Config, error) {
	c := DefaultConfig()
	fs := flag.NewFlagSet("merch-store", flag.ContinueOnError)
	settings := c.settings()
	for _, s := range settings {
		s.define(fs, flagName(s.env), s.usage+" ("+s.env+")")
	}
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if *showVersion {
		return c, errVersion
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	for _, s := range settings {
		v := getenv(s.env)
		if v == "" || set[flagName(s.env)] {
			continue
		}
		if err := fs.Set(flagName(s.env), v); err != nil {
			errs = append(errs, fmt.Errorf("%s: invalid value %s", s.env, quoteSetting(s.env, v)))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	return c, c.validate()
}

// quoteSetting shows a bad value in an error, except a secret's.
func quoteSetting(env, v string) string {
	switch env {
	case "JWT_SECRET":
		return "(not shown)"
	case "DATABASE_URL":
		return fmt.Sprintf("%q", persist.Redact(v, v))
	}
	return fmt.Sprintf("%q", v)
}

func flagName(env string) string {
	return strings.ReplaceAll(strings.ToLower(env), "_", "-")
}

var logLevels = []string{"debug", "info", "warn", "error"}

// validate checks every setting's range; errors name the variable.
func (c *Config) validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	positive := func(env string, d time.Duration) { check(d > 0, "%s must be a positive duration", env) }
	atLeast := func(env string, n, low int) { check(n >= low, "%s must be at least %d", env, low) }

	check(c.HTTPAddr != "", "HTTP_ADDR is required")
	check(c.AdminAddr != "", "ADMIN_ADDR is required")
	check(c.AdminAddr != c.HTTPAddr, "ADMIN_ADDR must differ from HTTP_ADDR")
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("DATABASE_URL is required (make run starts a local PostgreSQL and sets it)"))
	} else if err := persist.CheckURL(c.DatabaseURL); err != nil {
		errs = append(errs, fmt.Errorf("DATABASE_URL is not a valid PostgreSQL connection string: %w", err))
	}
	check(len(c.JWTSecret) >= 16, "JWT_SECRET is required and must be at least 16 bytes")
	positive("JWT_TTL", c.JWTTTL)
	check(c.BcryptCost >= 4 && c.BcryptCost <= 31, "BCRYPT_COST must be 4…31")
	check(slices.Contains(logLevels, c.LogLevel), "LOG_LEVEL must be one of %s", strings.Join(logLevels, ", "))
	check(c.LogFormat == "text" || c.LogFormat == "json", "LOG_FORMAT must be text or json")
	positive("LOG_REPEAT_INTERVAL", c.LogRepeatInterval)
	atLeast("DB_MAX_CONNS", c.DBMaxConns, 2) // the journal's connection and one for loads
	atLeast("JOURNAL_QUEUE", c.JournalQueue, 1)
	check(c.JournalBatch >= 1 && c.JournalBatch <= c.JournalQueue, "JOURNAL_BATCH must be 1…JOURNAL_QUEUE")
	positive("REQUEST_TIMEOUT", c.RequestTimeout)
	positive("ACTOR_IDLE_TTL", c.IdleTTL)
	atLeast("INFLIGHT_PER_USER", c.InflightPerUser, 1)
	atLeast("ACTOR_INBOX_SIZE", c.InboxSize, 1)
	atLeast("HASH_WORKERS", c.HashWorkers, 1)
	atLeast("HASH_QUEUE", c.HashQueue, 1)
	atLeast("TOKEN_CACHE", c.TokenCache, 1)
	atLeast("LOGIN_FAILURES_MAX", c.LoginFailures, 1)
	check(c.LoginNameFailures >= c.LoginFailures, "LOGIN_FAILURES_NAME_MAX must be at least LOGIN_FAILURES_MAX")
	positive("LOGIN_FAILURE_WINDOW", c.LoginWindow)
	check(c.RegisterRate >= 0, "REGISTER_RATE must be 0 (no limit) or positive")
	atLeast("REGISTER_BURST", c.RegisterBurst, 1)
	atLeast("MAX_CONNS", c.MaxConns, 1)
	atLeast("MAX_CONNS_PER_IP", c.MaxConnsPerIP, 0)
	positive("START_TIMEOUT", c.StartTimeout)
	positive("SHUTDOWN_TIMEOUT", c.ShutdownTimeout)
	if c.InternalAddr != "" {
		check(c.NodeID != "" && c.NodeID != singleWriterID, "NODE_ID must be set, and not %q, in a cluster", singleWriterID)
		check(c.LeaseTTL >= 300*time.Millisecond, "SHARD_LEASE_TTL must be at least 300ms")
		check(c.InternalAddr != c.HTTPAddr && c.InternalAddr != c.AdminAddr, "INTERNAL_ADDR must differ from HTTP_ADDR and ADMIN_ADDR")
	}
	return errors.Join(errs...)
}

func getenv(k string) string { return os.Getenv(k) }

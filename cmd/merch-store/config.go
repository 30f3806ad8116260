package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
)

// Config is everything the server reads from its environment. Every
// variable can be overridden by the flag of the same name in lower case
// with dashes (HTTP_ADDR → -http-addr). The README lists them all.
type Config struct {
	HTTPAddr        string        // HTTP_ADDR
	DatabaseURL     string        // DATABASE_URL (required)
	JWTSecret       string        // JWT_SECRET (required, ≥ 16 bytes)
	JWTTTL          time.Duration // JWT_TTL
	BcryptCost      int           // BCRYPT_COST
	LogLevel        string        // LOG_LEVEL: debug, info, warn, error
	LogFormat       string        // LOG_FORMAT: text or json
	DBMaxConns      int           // DB_MAX_CONNS
	JournalQueue    int           // JOURNAL_QUEUE
	JournalBatch    int           // JOURNAL_BATCH
	RequestTimeout  time.Duration // REQUEST_TIMEOUT
	IdleTTL         time.Duration // ACTOR_IDLE_TTL
	InflightPerUser int           // INFLIGHT_PER_USER
	InboxSize       int           // ACTOR_INBOX_SIZE
	HashWorkers     int           // HASH_WORKERS
	HashQueue       int           // HASH_QUEUE
	TokenCache      int           // TOKEN_CACHE
	LoginFailures   int           // LOGIN_FAILURES_MAX
	LoginWindow     time.Duration // LOGIN_FAILURE_WINDOW
	ShutdownTimeout time.Duration // SHUTDOWN_TIMEOUT
	PprofAddr       string        // PPROF_ADDR: serve net/http/pprof here; empty = off
}

// DefaultConfig returns the documented defaults (no secrets, no database).
func DefaultConfig() Config {
	return Config{
		HTTPAddr:        ":8080",
		JWTTTL:          24 * time.Hour,
		BcryptCost:      10,
		LogLevel:        "info",
		LogFormat:       "text",
		DBMaxConns:      16,
		JournalQueue:    16384,
		JournalBatch:    4096,
		RequestTimeout:  time.Second,
		IdleTTL:         10 * time.Minute,
		InflightPerUser: 64,
		InboxSize:       8,
		HashWorkers:     max(1, runtime.GOMAXPROCS(0)/2), // leave cores for serving during a login storm
		HashQueue:       64,
		TokenCache:      100_000,
		LoginFailures:   10,
		LoginWindow:     time.Minute,
		ShutdownTimeout: 15 * time.Second,
	}
}

// LoadConfig reads the environment, then flags from args.
func LoadConfig(args []string, getenv func(string) string) (Config, error) {
	c := DefaultConfig()
	fs := flag.NewFlagSet("merch-store", flag.ContinueOnError)
	var errs []error
	str := func(p *string, env, usage string) {
		if v := getenv(env); v != "" {
			*p = v
		}
		fs.StringVar(p, flagName(env), *p, usage+" ("+env+")")
	}
	num := func(p *int, env, usage string) {
		if v := getenv(env); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", env, err))
			}
			*p = n
		}
		fs.IntVar(p, flagName(env), *p, usage+" ("+env+")")
	}
	dur := func(p *time.Duration, env, usage string) {
		if v := getenv(env); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", env, err))
			}
			*p = d
		}
		fs.DurationVar(p, flagName(env), *p, usage+" ("+env+")")
	}
	str(&c.HTTPAddr, "HTTP_ADDR", "listen address")
	str(&c.DatabaseURL, "DATABASE_URL", "PostgreSQL URL")
	str(&c.JWTSecret, "JWT_SECRET", "HS256 signing secret, at least 16 bytes")
	dur(&c.JWTTTL, "JWT_TTL", "token lifetime")
	num(&c.BcryptCost, "BCRYPT_COST", "bcrypt cost for new passwords")
	str(&c.LogLevel, "LOG_LEVEL", "debug, info, warn or error")
	str(&c.LogFormat, "LOG_FORMAT", "text or json")
	num(&c.DBMaxConns, "DB_MAX_CONNS", "PostgreSQL pool size")
	num(&c.JournalQueue, "JOURNAL_QUEUE", "records waiting for the journal writer before 503")
	num(&c.JournalBatch, "JOURNAL_BATCH", "records per journal transaction at most")
	dur(&c.RequestTimeout, "REQUEST_TIMEOUT", "wait for an actor's answer (writes: durable) before 503")
	dur(&c.IdleTTL, "ACTOR_IDLE_TTL", "idle time before a user's actor is passivated")
	num(&c.InflightPerUser, "INFLIGHT_PER_USER", "pending requests per user before 503")
	num(&c.InboxSize, "ACTOR_INBOX_SIZE", "initial mailbox size per actor")
	num(&c.HashWorkers, "HASH_WORKERS", "bcrypt worker goroutines")
	num(&c.HashQueue, "HASH_QUEUE", "bcrypt jobs waiting before 503")
	num(&c.TokenCache, "TOKEN_CACHE", "verified tokens cached")
	num(&c.LoginFailures, "LOGIN_FAILURES_MAX", "wrong passwords per name per window before 429")
	dur(&c.LoginWindow, "LOGIN_FAILURE_WINDOW", "login failure window")
	dur(&c.ShutdownTimeout, "SHUTDOWN_TIMEOUT", "graceful shutdown bound")
	str(&c.PprofAddr, "PPROF_ADDR", "serve /debug/pprof on this address (keep it on loopback); empty: off")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	return c, c.validate()
}

func flagName(env string) string {
	b := []byte(env)
	for i, ch := range b {
		switch {
		case ch == '_':
			b[i] = '-'
		case ch >= 'A' && ch <= 'Z':
			b[i] = ch + 'a' - 'A'
		}
	}
	return string(b)
}

func (c *Config) validate() error {
	switch {
	case c.DatabaseURL == "":
		return errors.New("DATABASE_URL is required (make run starts a local PostgreSQL and sets it)")
	case len(c.JWTSecret) < 16:
		return errors.New("JWT_SECRET is required and must be at least 16 bytes")
	case c.LogFormat != "text" && c.LogFormat != "json":
		return errors.New("LOG_FORMAT must be text or json")
	case c.JournalBatch > c.JournalQueue:
		return errors.New("JOURNAL_BATCH must not exceed JOURNAL_QUEUE")
	}
	return nil
}

func getenv(k string) string { return os.Getenv(k) }

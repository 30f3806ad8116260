package persist

import (
	"net/url"
	"regexp"
	"strings"
)

// Passwords a PostgreSQL connection string can carry: in a URL's user
// info, as a password= query parameter, or as a password=... keyword.
var (
	urlPasswordRE     = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*://[^:/@?#]*:([^@/?#]*)@`)
	keywordPasswordRE = regexp.MustCompile(`(?:^|[\s?&])password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&]*)`)
)

// Redact returns msg with every password of the connection string dsn
// replaced by xxxxx, in the forms it may take in messages (as written, and
// percent-decoded). It works on malformed strings too: that is when
// libraries quote them in errors.
func Redact(msg, dsn string) string {
	var secrets []string
	if m := urlPasswordRE.FindStringSubmatch(dsn); m != nil {
		secrets = append(secrets, m[1])
	}
	for _, m := range keywordPasswordRE.FindAllStringSubmatch(dsn, -1) {
		secrets = append(secrets, strings.Trim(m[1], "'"))
	}
	for _, s := range secrets {
		if s == "" {
			continue
		}
		msg = strings.ReplaceAll(msg, s, "xxxxx")
		if d, err := url.PathUnescape(s); err == nil && d != "" {
			msg = strings.ReplaceAll(msg, d, "xxxxx")
		}
	}
	return msg
}

// redacted wraps err so its text never shows dsn's password.
func redacted(err error, dsn string) error {
	if err == nil {
		return nil
	}
	return &redactedError{msg: Redact(err.Error(), dsn), err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }

// Unwrap keeps errors.Is and errors.As working on the cause (its own text
// is never printed by them).
func (e *redactedError) Unwrap() error { return e.err }

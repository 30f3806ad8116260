package api

import (
	"errors"
	"log/slog"
	"net"
	"strings"
)

// connLogger is fasthttp's error log. fasthttp formats connection errors
// with the bytes it could not parse ("... Buffer size=206, contents:
// "POST /api/auth ..."), which carry bearer tokens and passwords, and
// SecureErrorLogMessage does not cover every such message. So nothing of
// the arguments is logged but addresses, numbers, and the head of an
// error's text up to its first colon or quote ("error when reading request
// headers", "invalid header key"): fasthttp writes request bytes only
// after one of those. Repetition is the log
// limiter's job.
type connLogger struct{}

// connLogWhatMax bounds the error head kept.
const connLogWhatMax = 80

func (connLogger) Printf(format string, args ...any) {
	attrs := make([]any, 0, 4)
	for _, a := range args {
		switch v := a.(type) {
		case net.Addr:
			attrs = append(attrs, "addr", v.String())
		case error:
			attrs = append(attrs, "what", errorHead(v))
		case int, int64, uint64, int32:
			attrs = append(attrs, "n", v)
		}
	}
	slog.Warn("http: "+formatHead(format), attrs...)
}

// errorHead returns err's text up to the first colon or quote, bounded.
func errorHead(err error) string {
	var ne *net.OpError
	if errors.As(err, &ne) {
		return "network: " + ne.Op
	}
	s := err.Error()
	if i := strings.IndexAny(s, ":\"'"); i >= 0 {
		s = s[:i]
	}
	s = strings.TrimSpace(s)
	if len(s) > connLogWhatMax {
		s = s[:connLogWhatMax]
	}
	return s
}

// formatHead is the constant part of a fasthttp log format, up to its
// first verb, bounded.
func formatHead(format string) string {
	if i := strings.IndexByte(format, '%'); i >= 0 {
		format = format[:i]
	}
	format = strings.TrimRight(format, " :\"")
	if len(format) > connLogWhatMax {
		format = format[:connLogWhatMax]
	}
	return format
}

// Package prometheus holds no code: its tests check the Prometheus
// configuration, rules and rule unit tests of this directory with promtool
// (Debian package prometheus; .ci/run installs it).
package prometheus

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// MustPromtool returns the promtool binary, or skips the test without it.
func MustPromtool(tb testing.TB) string {
	tb.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		tb.Skip("promtool not found: install the prometheus package (apt-get install prometheus; .ci/run does) to check the rules and run their unit tests")
	}
	return bin
}

// mustGlob returns the files matching pattern, at least one.
func mustGlob(tb testing.TB, pattern string) []string {
	tb.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil {
		tb.Fatal(err)
	}
	if len(files) == 0 {
		tb.Fatalf("no files match %s", pattern)
	}
	return files
}

func promtool(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(MustPromtool(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestConfig checks prometheus.yml and, through its rule_files, the rules
// compose mounts beside it.
func TestConfig(t *testing.T) {
	promtool(t, "check", "config", "prometheus.yml")
}

func TestRules(t *testing.T) {
	for _, f := range mustGlob(t, "rules/*.yml") {
		promtool(t, "check", "rules", "--lint=all", "--lint-fatal", f)
	}
}

// TestRulesUnit runs the rules' unit tests (tests/*_test.yml).
func TestRulesUnit(t *testing.T) {
	for _, f := range mustGlob(t, "tests/*_test.yml") {
		t.Run(filepath.Base(f), func(t *testing.T) {
			promtool(t, "test", "rules", f)
		})
	}
}

var (
	alertRe     = regexp.MustCompile(`(?m)^\s*- alert:\s*(\S+)`)
	recordRe    = regexp.MustCompile(`(?m)^\s*- record:\s*(\S+)`)
	alertnameRe = regexp.MustCompile(`alertname:\s*([A-Za-z0-9_]+)`)
	exprRe      = regexp.MustCompile(`(?m)^\s*- expr:\s*(.+)$`)
)

// TestRulesCovered requires, for every alert in rules/, a unit test case
// where it fires (exp_alerts with labels) and one where it stays silent,
// and for every recording rule a promql_expr_test that reads it.
func TestRulesCovered(t *testing.T) {
	fires, silent := map[string]bool{}, map[string]bool{}
	var exprs []string
	for _, f := range mustGlob(t, "tests/*_test.yml") {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for _, m := range exprRe.FindAllStringSubmatch(s, -1) {
			exprs = append(exprs, m[1])
		}
		// A case runs from its alertname to the next case or test group.
		locs := alertnameRe.FindAllStringSubmatchIndex(s, -1)
		for i, l := range locs {
			end := len(s)
			if i+1 < len(locs) {
				end = locs[i+1][0]
			}
			if j := strings.Index(s[l[1]:end], "- interval:"); j >= 0 {
				end = l[1] + j
			}
			name := s[l[2]:l[3]]
			if strings.Contains(s[l[1]:end], "exp_labels:") {
				fires[name] = true
			} else {
				silent[name] = true
			}
		}
	}
	alerts, records := 0, 0
	for _, f := range mustGlob(t, "rules/*.yml") {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range alertRe.FindAllStringSubmatch(string(b), -1) {
			alerts++
			if !fires[m[1]] {
				t.Errorf("%s: alert %s has no unit test where it fires", f, m[1])
			}
			if !silent[m[1]] {
				t.Errorf("%s: alert %s has no unit test where it stays silent", f, m[1])
			}
		}
		for _, m := range recordRe.FindAllStringSubmatch(string(b), -1) {
			records++
			if !readsRecord(exprs, m[1]) {
				t.Errorf("%s: recording rule %s has no promql_expr_test", f, m[1])
			}
		}
	}
	if alerts == 0 || records == 0 {
		t.Fatalf("found %d alerts and %d recording rules in rules/: the patterns no longer match", alerts, records)
	}
}

// readsRecord reports whether one of exprs selects the series name.
func readsRecord(exprs []string, name string) bool {
	re := regexp.MustCompile(`(^|[^A-Za-z0-9_:])` + regexp.QuoteMeta(name) + `($|[^A-Za-z0-9_:])`)
	for _, e := range exprs {
		if re.MatchString(e) {
			return true
		}
	}
	return false
}

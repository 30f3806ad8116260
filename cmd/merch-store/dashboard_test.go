package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
)

const dashboardPath = "../../deploy/grafana/dashboards/merch-store.json"

// The dashboard linter's rules (github.com/grafana/dashboard-linter), so a
// dashboard imported into another Grafana works with its data source, its
// job and instance names, and its scrape interval.
const (
	ruleTemplateDatasource = "template-datasource-rule" // a "datasource" variable of Prometheus data sources, with a default
	ruleTemplateJob        = "template-job-rule"        // a "job" variable: a multi-select query on $datasource, all = .+
	ruleTemplateInstance   = "template-instance-rule"   // the same for "instance"
	rulePanelDatasource    = "panel-datasource-rule"    // every panel queries $datasource
	ruleTargetDatasource   = "target-datasource-rule"   // every target too
	ruleTargetJob          = "target-job-rule"          // every selector has job=~"$job"
	ruleTargetInstance     = "target-instance-rule"     // every selector has instance=~"$instance"
	ruleTargetRateInterval = "target-rate-interval-rule"
)

// TestDashboardLint: the dashboard passes every rule.
func TestDashboardLint(t *testing.T) {
	for _, p := range dashboardProblems(mustDashboard(t, dashboardPath)) {
		t.Error(p)
	}
}

// TestDashboardLintRulesFail: each rule finds the fault it is for, and
// only that rule does.
func TestDashboardLintRulesFail(t *testing.T) {
	variable := func(d map[string]any, name string) map[string]any {
		for _, v := range d["templating"].(map[string]any)["list"].([]any) {
			if v := v.(map[string]any); v["name"] == name {
				return v
			}
		}
		t.Fatalf("no variable %s", name)
		return nil
	}
	firstPanel := func(d map[string]any) map[string]any {
		for _, p := range dashboardPanels(d) {
			if p["type"] != "row" {
				return p
			}
		}
		t.Fatal("no panel")
		return nil
	}
	firstTarget := func(d map[string]any) map[string]any {
		return firstPanel(d)["targets"].([]any)[0].(map[string]any)
	}
	editExpr := func(d map[string]any, old, new string) {
		for _, p := range dashboardPanels(d) {
			for _, tg := range targetsOf(p) {
				if e, _ := tg["expr"].(string); strings.Contains(e, old) {
					tg["expr"] = strings.Replace(e, old, new, 1)
					return
				}
			}
		}
		t.Fatalf("no expr contains %q", old)
	}
	faults := []struct {
		rule  string
		fault func(d map[string]any)
	}{
		{ruleTemplateDatasource, func(d map[string]any) { variable(d, "datasource")["name"] = "ds" }},
		{ruleTemplateDatasource, func(d map[string]any) { delete(variable(d, "datasource"), "current") }},
		{ruleTemplateJob, func(d map[string]any) { variable(d, "job")["multi"] = false }},
		{ruleTemplateJob, func(d map[string]any) { variable(d, "job")["allValue"] = ".*" }},
		{ruleTemplateInstance, func(d map[string]any) {
			variable(d, "instance")["datasource"] = map[string]any{"type": "prometheus", "uid": "prometheus"}
		}},
		{rulePanelDatasource, func(d map[string]any) {
			firstPanel(d)["datasource"] = map[string]any{"type": "prometheus", "uid": "prometheus"}
		}},
		{ruleTargetDatasource, func(d map[string]any) { delete(firstTarget(d), "datasource") }},
		{ruleTargetJob, func(d map[string]any) { editExpr(d, `job=~"$job", `, "") }},
		{ruleTargetJob, func(d map[string]any) { editExpr(d, `job=~"$job"`, `job="merch-store"`) }},
		{ruleTargetInstance, func(d map[string]any) { editExpr(d, `, instance=~"$instance"`, "") }},
		{ruleTargetInstance, func(d map[string]any) {
			editExpr(d, `merch_build_info{job=~"$job", instance=~"$instance"}`, `merch_build_info{job=~"$job"}`)
		}},
		{ruleTargetRateInterval, func(d map[string]any) { editExpr(d, "[$__rate_interval]", "[1m]") }},
		{ruleTargetRateInterval, func(d map[string]any) { editExpr(d, "[$__rate_interval]", "[$__rate_interval:1m]") }},
	}
	for i, f := range faults {
		t.Run(fmt.Sprintf("%d-%s", i, f.rule), func(t *testing.T) {
			d := mustDashboard(t, dashboardPath)
			f.fault(d)
			problems := dashboardProblems(d)
			if len(problems) == 0 {
				t.Fatalf("%s found nothing", f.rule)
			}
			for _, p := range problems {
				if !strings.HasPrefix(p, f.rule+":") {
					t.Errorf("another rule fired: %s", p)
				}
			}
		})
	}
}

func mustDashboard(tb testing.TB, path string) map[string]any {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(b, &d); err != nil {
		tb.Fatal(err)
	}
	return d
}

// dashboardPanels returns every panel, rows and the panels rows hold.
func dashboardPanels(d map[string]any) []map[string]any {
	var out []map[string]any
	var walk func(v any)
	walk = func(v any) {
		list, _ := v.([]any)
		for _, p := range list {
			if p, ok := p.(map[string]any); ok {
				out = append(out, p)
				walk(p["panels"])
			}
		}
	}
	walk(d["panels"])
	return out
}

func targetsOf(p map[string]any) []map[string]any {
	var out []map[string]any
	list, _ := p["targets"].([]any)
	for _, t := range list {
		if t, ok := t.(map[string]any); ok {
			out = append(out, t)
		}
	}
	return out
}

func templatedUID(v any) bool {
	m, _ := v.(map[string]any)
	uid, _ := m["uid"].(string)
	return uid == "$datasource" || uid == "${datasource}"
}

// dashboardProblems lints d; each problem starts with its rule's name.
func dashboardProblems(d map[string]any) []string {
	var out []string
	add := func(rule, format string, args ...any) { out = append(out, rule+": "+fmt.Sprintf(format, args...)) }
	vars := map[string]map[string]any{}
	if tm, ok := d["templating"].(map[string]any); ok {
		list, _ := tm["list"].([]any)
		for _, v := range list {
			if v, ok := v.(map[string]any); ok {
				name, _ := v["name"].(string)
				vars[name] = v
			}
		}
	}
	if ds := vars["datasource"]; ds == nil || ds["type"] != "datasource" || ds["query"] != "prometheus" {
		add(ruleTemplateDatasource, `no variable "datasource" of type datasource for prometheus`)
	} else if cur, _ := ds["current"].(map[string]any); cur == nil || cur["value"] == nil || cur["value"] == "" {
		add(ruleTemplateDatasource, "the datasource variable has no default (provisioning needs one)")
	}
	for name, rule := range map[string]string{"job": ruleTemplateJob, "instance": ruleTemplateInstance} {
		v := vars[name]
		if v == nil {
			add(rule, "no variable %q", name)
			continue
		}
		q, _ := v["query"].(string)
		switch {
		case v["type"] != "query" || !strings.HasPrefix(q, "label_values("):
			add(rule, "%s is not a label_values query", name)
		case !templatedUID(v["datasource"]):
			add(rule, "%s does not query $datasource", name)
		case v["multi"] != true || v["includeAll"] != true || v["allValue"] != ".+":
			add(rule, "%s must be multi-select with All = .+", name)
		case v["label"] != strings.ToUpper(name[:1])+name[1:]:
			add(rule, "%s must be labelled %q", name, strings.ToUpper(name[:1])+name[1:])
		}
	}
	for _, p := range dashboardPanels(d) {
		if p["type"] == "row" {
			continue
		}
		title, _ := p["title"].(string)
		if !templatedUID(p["datasource"]) {
			add(rulePanelDatasource, "panel %q does not use $datasource", title)
		}
		for _, tg := range targetsOf(p) {
			if !templatedUID(tg["datasource"]) {
				add(ruleTargetDatasource, "a target of %q does not use $datasource", title)
			}
			expr, _ := tg["expr"].(string)
			sels, ranges := promqlSelectors(expr)
			for _, s := range sels {
				if !hasMatcher(s.matchers, `job=~"$job"`) {
					add(ruleTargetJob, "%q: %s has no job=~\"$job\"", title, s.name)
				}
				if !hasMatcher(s.matchers, `instance=~"$instance"`) {
					add(ruleTargetInstance, "%q: %s has no instance=~\"$instance\"", title, s.name)
				}
			}
			for _, r := range ranges {
				if r != "$__rate_interval" {
					add(ruleTargetRateInterval, "%q: range [%s], want [$__rate_interval]", title, r)
				}
			}
		}
	}
	return out
}

func hasMatcher(matchers []string, want string) bool {
	for _, m := range matchers {
		if strings.ReplaceAll(m, " ", "") == want {
			return true
		}
	}
	return false
}

type selector struct {
	name     string
	matchers []string
}

// promqlSelectors scans a PromQL expression (what the dashboard uses:
// selectors, functions, aggregations with by/without, on/ignoring, binary
// operators, numbers, ranges) for its vector selectors and the contents of
// its range brackets. It is no full parser; it errs by reporting a
// selector too many, never by missing one.
func promqlSelectors(expr string) (sels []selector, ranges []string) {
	// Keywords followed by a label list, and bare keywords.
	labelLists := map[string]bool{"by": true, "without": true, "on": true, "ignoring": true,
		"group_left": true, "group_right": true}
	keywords := map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true}
	for _, agg := range strings.Fields("sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio") {
		keywords[agg] = true // aggregations: "sum by (x) (…)" has no "(" after the name
	}
	isIdent := func(c byte, first bool) bool {
		return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || !first && c >= '0' && c <= '9'
	}
	skipSpace := func(i int) int {
		for i < len(expr) && (expr[i] == ' ' || expr[i] == '\t' || expr[i] == '\n') {
			i++
		}
		return i
	}
	// until returns the index after the closing byte, skipping strings.
	until := func(i int, closing byte) int {
		for i < len(expr) && expr[i] != closing {
			if c := expr[i]; c == '"' || c == '\'' || c == '`' {
				for i++; i < len(expr) && expr[i] != c; i++ {
					if expr[i] == '\\' {
						i++
					}
				}
			}
			i++
		}
		return i + 1
	}
	block := func(i int) (matchers []string, next int) { // expr[i] == '{'
		end := until(i+1, '}')
		inner := expr[i+1 : min(end-1, len(expr))]
		for m := range strings.SplitSeq(inner, ",") { // our matchers hold no commas
			if m = strings.TrimSpace(m); m != "" {
				matchers = append(matchers, m)
			}
		}
		return matchers, end
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c >= '0' && c <= '9' || c == '.':
			for i < len(expr) && (isIdent(expr[i], false) || expr[i] == '.') {
				i++ // a number (1e3 and 0x1f too)
			}
		case isIdent(c, true):
			start := i
			for i < len(expr) && isIdent(expr[i], false) {
				i++
			}
			name := expr[start:i]
			j := skipSpace(i)
			switch {
			case labelLists[name] && j < len(expr) && expr[j] == '(':
				i = until(j+1, ')')
			case keywords[name]:
			case j < len(expr) && expr[j] == '(':
				// a function or an aggregation: its arguments follow
			default:
				s := selector{name: name}
				if j < len(expr) && expr[j] == '{' {
					s.matchers, i = block(j)
				}
				sels = append(sels, s)
			}
		case c == '{':
			s := selector{name: "{…}"}
			s.matchers, i = block(i)
			sels = append(sels, s)
		case c == '[':
			end := until(i+1, ']')
			ranges = append(ranges, expr[i+1:min(end-1, len(expr))])
			i = end
		case c == '"' || c == '\'' || c == '`':
			i = until(i+1, c)
		default:
			i++
		}
	}
	return sels, ranges
}

package deploy

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// dockerfile is what the tests read of a Dockerfile: its stages, each
// with its base image, ENV, exec-form ENTRYPOINT and HEALTHCHECK.
type dockerfile struct {
	args   map[string]string // global ARGs (before the first FROM) with defaults
	stages []stage
}

type stage struct {
	from        string // image reference, ARGs substituted
	env         map[string]string
	entrypoint  []string
	healthcheck []string          // exec-form CMD
	healthOpts  map[string]string // --timeout=3s → timeout: 3s
}

func parseDockerfile(path string) (dockerfile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return dockerfile{}, err
	}
	return parseDockerfileText(string(data))
}

// parseDockerfileText understands the instructions the tests check, in the
// forms our Dockerfile uses (continuation lines, KEY=VALUE ENV, JSON exec
// form); anything else is skipped.
func parseDockerfileText(text string) (dockerfile, error) {
	df := dockerfile{args: map[string]string{}}
	var line string
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if line == "" && (l == "" || strings.HasPrefix(l, "#")) {
			continue
		}
		if rest, ok := strings.CutSuffix(l, `\`); ok {
			line += rest + " "
			continue
		}
		line += l
		if err := df.add(line); err != nil {
			return df, err
		}
		line = ""
	}
	return df, sc.Err()
}

func (df *dockerfile) add(line string) error {
	instr, rest, _ := strings.Cut(line, " ")
	rest = strings.TrimSpace(rest)
	instr = strings.ToUpper(instr)
	if instr == "FROM" {
		image, _, _ := strings.Cut(rest, " ")
		df.stages = append(df.stages, stage{from: df.expand(image), env: map[string]string{}, healthOpts: map[string]string{}})
		return nil
	}
	if len(df.stages) == 0 {
		if instr == "ARG" {
			k, v, _ := strings.Cut(rest, "=")
			df.args[k] = v
		}
		return nil
	}
	st := &df.stages[len(df.stages)-1]
	switch instr {
	case "ENV":
		for _, kv := range strings.Fields(rest) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return fmt.Errorf("Dockerfile: ENV %s: use KEY=VALUE", rest)
			}
			st.env[k] = v
		}
	case "ENTRYPOINT":
		if err := json.Unmarshal([]byte(rest), &st.entrypoint); err != nil {
			return fmt.Errorf("Dockerfile: ENTRYPOINT must be the exec (JSON) form: %w", err)
		}
	case "HEALTHCHECK":
		for strings.HasPrefix(rest, "--") {
			opt, tail, _ := strings.Cut(rest, " ")
			k, v, _ := strings.Cut(strings.TrimPrefix(opt, "--"), "=")
			st.healthOpts[k] = v
			rest = strings.TrimSpace(tail)
		}
		cmd, ok := strings.CutPrefix(rest, "CMD ")
		if !ok {
			return fmt.Errorf("Dockerfile: HEALTHCHECK %s: want [OPTIONS] CMD [...]", rest)
		}
		if err := json.Unmarshal([]byte(strings.TrimSpace(cmd)), &st.healthcheck); err != nil {
			return fmt.Errorf("Dockerfile: HEALTHCHECK CMD must be the exec (JSON) form: %w", err)
		}
	}
	return nil
}

// expand substitutes ${NAME} and $NAME of global ARGs.
func (df *dockerfile) expand(s string) string {
	for k, v := range df.args {
		s = strings.ReplaceAll(s, "${"+k+"}", v)
		s = strings.ReplaceAll(s, "$"+k, v)
	}
	return s
}

// goModVersion returns the Go release go.mod asks for: its toolchain line
// if any, else its go line.
func goModVersion(gomod string) (string, error) {
	var goLine, toolchain string
	for l := range strings.Lines(gomod) {
		f := strings.Fields(l)
		if len(f) == 2 && f[0] == "go" {
			goLine = f[1]
		}
		if len(f) == 2 && f[0] == "toolchain" {
			toolchain = strings.TrimPrefix(f[1], "go")
		}
	}
	if toolchain != "" {
		return toolchain, nil
	}
	if goLine == "" {
		return "", errors.New("go.mod has no go line")
	}
	return goLine, nil
}

// checkGoVersion: the builder stage is golang:<go.mod's version>, exactly
// (a suffix such as -bookworm is fine). golang:1.26 would be whatever
// 1.26.x a cache holds, and with GOTOOLCHAIN=local an older one refuses
// to build.
func checkGoVersion(df dockerfile, want string) []string {
	for _, st := range df.stages {
		tag, ok := strings.CutPrefix(st.from, "golang:")
		if !ok {
			continue
		}
		if tag != want && !strings.HasPrefix(tag, want+"-") {
			return []string{fmt.Sprintf("Dockerfile builds FROM golang:%s, go.mod asks for %s", tag, want)}
		}
		return nil
	}
	return []string{"Dockerfile has no golang: build stage"}
}

// checkImageHealth: the final stage's HEALTHCHECK probes the admin
// listener's /readyz with the server's binary, with a timeout the probe's
// own fits in.
func checkImageHealth(f facts, df dockerfile) []string {
	if len(df.stages) == 0 {
		return []string{"Dockerfile has no stage"}
	}
	st := df.stages[len(df.stages)-1]
	if st.healthcheck == nil {
		return []string{"Dockerfile: the final stage has no HEALTHCHECK"}
	}
	problems := checkProbeCommand(f, st.healthcheck, st.env["ADMIN_ADDR"])
	timeout := 30 * time.Second // Docker's default
	if v, ok := st.healthOpts["timeout"]; ok {
		var err error
		if timeout, err = time.ParseDuration(v); err != nil {
			problems = append(problems, "HEALTHCHECK --timeout="+v+": "+err.Error())
		}
	}
	if timeout <= f.probeTimeout {
		problems = append(problems, fmt.Sprintf("HEALTHCHECK --timeout=%v must exceed the probe's own %v", timeout, f.probeTimeout))
	}
	return problems
}

func TestDockerfile(t *testing.T) {
	f := mustFacts(t)
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	want, err := goModVersion(string(gomod))
	if err != nil {
		t.Fatal(err)
	}
	df, err := parseDockerfile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range append(checkGoVersion(df, want), checkImageHealth(f, df)...) {
		t.Error(p)
	}
}

// TestDockerfileChecks shows each Dockerfile check failing on a file that
// breaks its rule, and passing on one that keeps it.
func TestDockerfileChecks(t *testing.T) {
	f := facts{entrypoint: "/merch-store", probeTimeout: 2 * time.Second}
	const good = `ARG GO_VERSION=1.26.8
FROM golang:${GO_VERSION} AS build
FROM scratch
ENV HTTP_ADDR=:8080 \
    ADMIN_ADDR=:8081
HEALTHCHECK --interval=5s --timeout=3s \
  CMD ["/merch-store", "-probe", "http://127.0.0.1:8081/readyz"]
ENTRYPOINT ["/merch-store"]
`
	for _, tc := range []struct {
		name, text, goVersion, problem string
	}{
		{"good", good, "1.26.8", ""},
		{"go.mod moved on", good, "1.26.9", "go.mod asks for 1.26.9"},
		{"minor only", strings.Replace(good, "${GO_VERSION}", "1.26", 1), "1.26.8", "FROM golang:1.26,"},
		{"no healthcheck", strings.Replace(good, "HEALTHCHECK", "# HEALTHCHECK", 1), "1.26.8", "no HEALTHCHECK"},
		{"other port", strings.Replace(good, "ADMIN_ADDR=:8081", "ADMIN_ADDR=:9091", 1), "1.26.8", "ADMIN_ADDR :9091"},
		{"liveness", strings.Replace(good, "/readyz", "/healthz", 1), "1.26.8", "must ask /readyz"},
		{"other binary", strings.Replace(good, `CMD ["/merch-store"`, `CMD ["/bin/curl"`, 1), "1.26.8", "healthcheck must be"},
		{"short timeout", strings.Replace(good, "--timeout=3s", "--timeout=2s", 1), "1.26.8", "must exceed"},
		{"default timeout", strings.Replace(good, "--timeout=3s ", "", 1), "1.26.8", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			df, err := parseDockerfileText(tc.text)
			if err != nil {
				t.Fatal(err)
			}
			expectProblem(t, append(checkGoVersion(df, tc.goVersion), checkImageHealth(f, df)...), tc.problem)
		})
	}
	if v, err := goModVersion("module m\n\ngo 1.26.0\n\ntoolchain go1.26.8\n"); v != "1.26.8" || err != nil {
		t.Errorf("goModVersion with a toolchain line = %q, %v; want 1.26.8", v, err)
	}
}

// expectProblem: problems is empty when want is "", else one of them
// contains want.
func expectProblem(t *testing.T, problems []string, want string) {
	t.Helper()
	if want == "" {
		for _, p := range problems {
			t.Errorf("unexpected problem: %s", p)
		}
		return
	}
	for _, p := range problems {
		if strings.Contains(p, want) {
			return
		}
	}
	t.Errorf("problems %q, want one containing %q", problems, want)
}

// newStatusServer answers GET /<code> with that status.
func newStatusServer(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		if err != nil {
			code = http.StatusNotFound
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

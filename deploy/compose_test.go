package deploy

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// composeFile is what the tests read of docker-compose.yml. YAML anchors
// and merge keys (the cluster nodes') are resolved by the decoder.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Image           string            `yaml:"image"`
	Build           any               `yaml:"build"`
	Profiles        []string          `yaml:"profiles"`
	DependsOn       yaml.Node         `yaml:"depends_on"`
	Environment     map[string]string `yaml:"environment"`
	Ports           []any             `yaml:"ports"`
	Healthcheck     *healthcheck      `yaml:"healthcheck"`
	StopGracePeriod string            `yaml:"stop_grace_period"`
	Command         any               `yaml:"command"`
}

type healthcheck struct {
	Test        command `yaml:"test"`
	Timeout     string  `yaml:"timeout"`
	StartPeriod string  `yaml:"start_period"`
	Disable     bool    `yaml:"disable"`
}

// command is a healthcheck test: a list, or a string for CMD-SHELL.
type command []string

func (c *command) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*c = command{"CMD-SHELL", n.Value}
		return nil
	}
	return n.Decode((*[]string)(c))
}

// isServer: the service runs our image.
// isServer: the service runs this repository's image (built from its root,
// or tagged merch-store:), not another image the compose file builds.
func (s composeService) isServer() bool {
	return s.Build == "." || strings.HasPrefix(s.Image, "merch-store:")
}

// setting returns the service's value of a server variable: its
// environment, else the image's ENV, else def.
func (s composeService) setting(f facts, env, def string) string {
	if v, ok := s.Environment[env]; ok {
		return v
	}
	if v, ok := f.imageEnv[env]; ok {
		return v
	}
	return def
}

// composeDuration parses a compose duration ("20s", "1m30s"); "" is def.
func composeDuration(v string, def time.Duration) (time.Duration, error) {
	if v == "" {
		return def, nil
	}
	return time.ParseDuration(v)
}

var loopbackPortRE = regexp.MustCompile(`^127\.0\.0\.1:\d+(-\d+)?:\d+(-\d+)?(/(tcp|udp))?$`)

// checkCompose returns what is wrong with a compose file, one line per
// problem, each naming its service.
func checkCompose(f facts, data []byte) []string {
	var cf composeFile
	if err := yaml.Unmarshal(data, &cf); err != nil {
		return []string{"docker-compose.yml: " + err.Error()}
	}
	if len(cf.Services) == 0 {
		return []string{"docker-compose.yml: no services"}
	}
	var problems []string
	names := make([]string, 0, len(cf.Services))
	for name := range cf.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		s := cf.Services[name]
		report := func(format string, args ...any) {
			problems = append(problems, name+": "+fmt.Sprintf(format, args...))
		}
		checkHealth(f, s, report)
		checkDependsOn(cf, s, report)
		for _, p := range s.Ports {
			switch p := p.(type) {
			case string:
				if !loopbackPortRE.MatchString(p) {
					report("port %q must be published as 127.0.0.1:HOST:CONTAINER (dev ports stay on the loopback)", p)
				}
			case map[string]any:
				if p["host_ip"] != "127.0.0.1" {
					report("port %v must have host_ip: 127.0.0.1", p)
				}
			default:
				report("port %v must be published as \"127.0.0.1:HOST:CONTAINER\"", p)
			}
		}
		if s.isServer() {
			checkStopGrace(f, s, report)
		}
	}
	return problems
}

func checkHealth(f facts, s composeService, report func(string, ...any)) {
	h := s.Healthcheck
	if h == nil || h.Disable || len(h.Test) == 0 || h.Test[0] == "NONE" {
		report("no healthcheck")
		return
	}
	test := strings.Join(h.Test, " ")
	if strings.HasPrefix(s.Image, "postgres:") && (!strings.Contains(test, "pg_isready") || !strings.Contains(test, "-h 127.0.0.1")) {
		report("healthcheck %q must be pg_isready -h 127.0.0.1 (TCP: the init server listens on the socket only)", test)
	}
	if !s.isServer() {
		return
	}
	if h.Test[0] != "CMD" {
		report("healthcheck must be the exec form [CMD, %s, -probe, URL] (the image has no shell)", f.entrypoint)
		return
	}
	for _, p := range checkProbeCommand(f, h.Test[1:], s.setting(f, "ADMIN_ADDR", "")) {
		report("%s", p)
	}
	timeout, err := composeDuration(h.Timeout, 30*time.Second)
	if err != nil {
		report("healthcheck timeout %q: %v", h.Timeout, err)
	} else if timeout <= f.probeTimeout {
		report("healthcheck timeout %v must exceed the probe's own %v", timeout, f.probeTimeout)
	}
}

// checkDependsOn: the long form, every condition service_healthy, and a
// service started without a profile depends on none that has one.
func checkDependsOn(cf composeFile, s composeService, report func(string, ...any)) {
	switch s.DependsOn.Kind {
	case 0:
		return
	case yaml.SequenceNode:
		report("depends_on must be a map with condition: service_healthy, not a list (a list waits only for the start)")
		return
	}
	var deps map[string]struct {
		Condition string `yaml:"condition"`
	}
	if err := s.DependsOn.Decode(&deps); err != nil {
		report("depends_on: %v", err)
		return
	}
	for dep, d := range deps {
		if d.Condition != "service_healthy" {
			report("depends_on %s: condition %q, want service_healthy", dep, d.Condition)
		}
		ds, ok := cf.Services[dep]
		switch {
		case !ok:
			report("depends_on %s: no such service", dep)
		case len(s.Profiles) == 0 && len(ds.Profiles) > 0:
			report("depends_on %s, which runs only in profiles %v", dep, ds.Profiles)
		case len(s.Profiles) > 0 && len(ds.Profiles) > 0 && !slices.ContainsFunc(s.Profiles, func(p string) bool { return slices.Contains(ds.Profiles, p) }):
			report("depends_on %s, which shares none of its profiles", dep)
		}
	}
}

// checkStopGrace: docker compose stop waits stop_grace_period (10 s by
// default) before SIGKILL; the server may take SHUTDOWN_TIMEOUT to drain.
func checkStopGrace(f facts, s composeService, report func(string, ...any)) {
	grace, err := composeDuration(s.StopGracePeriod, 10*time.Second)
	if err != nil {
		report("stop_grace_period %q: %v", s.StopGracePeriod, err)
		return
	}
	shutdown, err := composeDuration(s.setting(f, "SHUTDOWN_TIMEOUT", ""), f.shutdownTimeout)
	if err != nil {
		report("SHUTDOWN_TIMEOUT: %v", err)
		return
	}
	if grace < shutdown {
		report("stop_grace_period %v is shorter than SHUTDOWN_TIMEOUT %v: a graceful stop would be killed", grace, shutdown)
	}
}

func TestCompose(t *testing.T) {
	f := mustFacts(t)
	data, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range checkCompose(f, data) {
		t.Error(p)
	}
	var cf composeFile
	if err := yaml.Unmarshal(data, &cf); err != nil {
		t.Fatal(err)
	}
	var clustered int
	for _, s := range cf.Services {
		if s.isServer() && slices.Contains(s.Profiles, "cluster") {
			clustered++
		}
	}
	if clustered == 0 {
		t.Error("no merch-store service in the cluster profile: the checks above did not see it")
	}
	// The ha profile: a monitor and two nodes of the pg_auto_failover
	// image, and a server on every node through a multi-host URL that
	// picks the read-write one.
	var monitors, nodes, onHA int
	for _, s := range cf.Services {
		if !slices.Contains(s.Profiles, "ha") {
			continue
		}
		switch {
		case s.isServer():
			u := s.Environment["DATABASE_URL"]
			if strings.Count(u, ":5432") < 2 || !strings.Contains(u, "target_session_attrs=read-write") {
				t.Errorf("ha server's DATABASE_URL %q must name both nodes and target_session_attrs=read-write", u)
			}
			onHA++
		case strings.HasPrefix(s.Image, "merch-pgaf:") && strings.Contains(fmt.Sprint(s.Command), "create monitor"):
			monitors++
		case strings.HasPrefix(s.Image, "merch-pgaf:") && strings.Contains(fmt.Sprint(s.Command), "create postgres"):
			nodes++
		}
	}
	if monitors != 1 || nodes != 2 || onHA != 1 {
		t.Errorf("ha profile: %d monitors, %d data nodes, %d servers; want 1, 2, 1", monitors, nodes, onHA)
	}
}

// TestComposeChecks shows each compose check failing on a file that
// breaks its rule, and passing on one that keeps it.
func TestComposeChecks(t *testing.T) {
	f := facts{entrypoint: "/merch-store", probeTimeout: 2 * time.Second, shutdownTimeout: 15 * time.Second,
		imageEnv: map[string]string{"ADMIN_ADDR": ":8081"}}
	const good = `
services:
  db:
    image: postgres:15
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U merch"]
  app: &app
    build: .
    depends_on:
      db: {condition: service_healthy}
    stop_grace_period: 20s
    environment: &env
      ADMIN_ADDR: ":8081"
    ports: ["127.0.0.1:8080:8080"]
    healthcheck:
      test: ["CMD", "/merch-store", "-probe", "http://127.0.0.1:8081/readyz"]
      timeout: 3s
  node:
    <<: *app
    profiles: [cluster]
    environment:
      <<: *env
      SHUTDOWN_TIMEOUT: 5s
  edge:
    image: haproxy:2.6
    profiles: [cluster]
    depends_on:
      node: {condition: service_healthy}
    ports: [{target: 8080, published: 8090, host_ip: 127.0.0.1}]
    healthcheck:
      test: bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080'
`
	for _, tc := range []struct {
		name, old, new, problem string
	}{
		{"good", "", "", ""},
		{"no healthcheck", "    healthcheck:\n      test: bash", "    x-healthcheck:\n      test: bash", "edge: no healthcheck"},
		{"disabled", "test: bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080'", `test: ["NONE"]`, "edge: no healthcheck"},
		{"socket pg_isready", "pg_isready -h 127.0.0.1", "pg_isready", "db: healthcheck"},
		{"list depends_on", "db: {condition: service_healthy}", "- db", "app: depends_on must be a map"},
		{"started only", "node: {condition: service_healthy}", "node: {condition: service_started}", "edge: depends_on node: condition"},
		{"profile dependency", "db: {condition: service_healthy}", "db: {condition: service_healthy}\n      edge: {condition: service_healthy}", "app: depends_on edge, which runs only in profiles"},
		{"all interfaces", `"127.0.0.1:8080:8080"`, `"8080:8080"`, `app: port "8080:8080"`},
		{"long form, all interfaces", "host_ip: 127.0.0.1", "host_ip: 0.0.0.0", "edge: port"},
		{"no grace", "stop_grace_period: 20s", "", "app: stop_grace_period 10s is shorter than SHUTDOWN_TIMEOUT 15s"},
		{"short grace", "stop_grace_period: 20s", "stop_grace_period: 12s", "app: stop_grace_period 12s"},
		{"wrong admin port", `"http://127.0.0.1:8081/readyz"`, `"http://127.0.0.1:8080/readyz"`, "node: probe URL"},
		{"shell probe", `["CMD", "/merch-store"`, `["CMD-SHELL", "/merch-store"`, "node: healthcheck must be the exec form"},
		{"short timeout", "timeout: 3s", "timeout: 2s", "node: healthcheck timeout 2s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := good
			if tc.old != "" {
				if !strings.Contains(text, tc.old) {
					t.Fatalf("fixture has no %q", tc.old)
				}
				text = strings.Replace(text, tc.old, tc.new, 1)
			}
			expectProblem(t, checkCompose(f, []byte(text)), tc.problem)
		})
	}
}

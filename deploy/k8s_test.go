package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// k8sObject is what the tests read of a workload manifest.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		Template struct {
			Spec struct {
				TerminationGracePeriodSeconds *int           `yaml:"terminationGracePeriodSeconds"`
				Containers                    []k8sContainer `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type k8sContainer struct {
	Name  string `yaml:"name"`
	Image string `yaml:"image"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"` // a number or a port name
	} `yaml:"httpGet"`
}

// checkK8s returns what is wrong with the workloads of a multi-document
// manifest that run our image.
func checkK8s(f facts, data []byte) []string {
	var problems []string
	var servers int
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var obj k8sObject
		err := dec.Decode(&obj)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return append(problems, "manifest: "+err.Error())
		}
		if obj.Kind != "StatefulSet" && obj.Kind != "Deployment" {
			continue
		}
		pod := obj.Spec.Template.Spec
		for _, c := range pod.Containers {
			if !strings.HasPrefix(c.Image, "merch-store:") {
				continue
			}
			servers++
			report := func(format string, args ...any) {
				problems = append(problems, obj.Kind+" "+obj.Metadata.Name+" "+c.Name+": "+fmt.Sprintf(format, args...))
			}
			checkK8sContainer(f, c, pod.TerminationGracePeriodSeconds, report)
		}
	}
	if servers == 0 {
		problems = append(problems, "manifest: no workload runs a merch-store image")
	}
	return problems
}

func checkK8sContainer(f facts, c k8sContainer, graceSeconds *int, report func(string, ...any)) {
	env := map[string]string{}
	for k, v := range f.imageEnv {
		env[k] = v
	}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	_, adminPort, err := net.SplitHostPort(env["ADMIN_ADDR"])
	if err != nil {
		report("ADMIN_ADDR %q: %v", env["ADMIN_ADDR"], err)
	}
	// port resolves a probe's port (a number or a container port's name).
	port := func(p string) string {
		for _, cp := range c.Ports {
			if cp.Name == p {
				return strconv.Itoa(cp.ContainerPort)
			}
		}
		return p
	}
	for _, pr := range []struct {
		what, path string
		probe      *k8sProbe
	}{{"readinessProbe", "/readyz", c.ReadinessProbe}, {"livenessProbe", "/healthz", c.LivenessProbe}} {
		switch {
		case pr.probe == nil || pr.probe.HTTPGet == nil:
			report("no %s httpGet", pr.what)
		case pr.probe.HTTPGet.Path != pr.path || port(pr.probe.HTTPGet.Port) != adminPort:
			report("%s GET %s on port %s, want %s on the admin port %s (ADMIN_ADDR)", pr.what,
				pr.probe.HTTPGet.Path, pr.probe.HTTPGet.Port, pr.path, adminPort)
		}
	}
	grace := 30 * time.Second // Kubernetes' default
	if graceSeconds != nil {
		grace = time.Duration(*graceSeconds) * time.Second
	}
	shutdown := f.shutdownTimeout
	if v, ok := env["SHUTDOWN_TIMEOUT"]; ok {
		if shutdown, err = time.ParseDuration(v); err != nil {
			report("SHUTDOWN_TIMEOUT %q: %v", v, err)
			return
		}
	}
	if grace < shutdown {
		report("terminationGracePeriodSeconds %v is shorter than SHUTDOWN_TIMEOUT %v", grace, shutdown)
	}
}

func TestK8s(t *testing.T) {
	f := mustFacts(t)
	data, err := os.ReadFile("k8s/merch-store.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range checkK8s(f, data) {
		t.Error(p)
	}
}

// TestK8sChecks shows each manifest check failing on a manifest that
// breaks its rule, and passing on one that keeps it.
func TestK8sChecks(t *testing.T) {
	f := facts{shutdownTimeout: 15 * time.Second, imageEnv: map[string]string{"ADMIN_ADDR": ":8081"}}
	const good = `apiVersion: v1
kind: Service
metadata: {name: svc}
---
kind: StatefulSet
metadata: {name: merch-store}
spec:
  template:
    spec:
      terminationGracePeriodSeconds: 30
      containers:
        - name: merch-store
          image: merch-store:dev
          ports:
            - {name: admin, containerPort: 8081}
          env:
            - {name: ADMIN_ADDR, value: ":8081"}
          readinessProbe:
            httpGet: {path: /readyz, port: admin}
          livenessProbe:
            httpGet: {path: /healthz, port: 8081}
`
	for _, tc := range []struct {
		name, old, new, problem string
	}{
		{"good", "", "", ""},
		{"default grace", "terminationGracePeriodSeconds: 30", "", ""},
		{"short grace", "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 10", "terminationGracePeriodSeconds 10s"},
		{"longer shutdown", `{name: ADMIN_ADDR, value: ":8081"}`, `{name: ADMIN_ADDR, value: ":8081"}
            - {name: SHUTDOWN_TIMEOUT, value: 45s}`, "shorter than SHUTDOWN_TIMEOUT 45s"},
		{"no readiness", "readinessProbe:", "startupProbe:", "no readinessProbe"},
		{"readiness on healthz", "path: /readyz", "path: /healthz", "readinessProbe GET /healthz"},
		{"public port", "port: 8081}", "port: 8080}", "livenessProbe GET /healthz on port 8080"},
		{"no server", "merch-store:dev", "nginx:1", "no workload runs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := good
			if tc.old != "" {
				if !strings.Contains(text, tc.old) {
					t.Fatalf("fixture has no %q", tc.old)
				}
				text = strings.Replace(text, tc.old, tc.new, 1)
			}
			expectProblem(t, checkK8s(f, []byte(text)), tc.problem)
		})
	}
}

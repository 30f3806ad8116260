package deploy

import (
	"bytes"
	"errors"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// facts are what the deployment files must agree with: the server's
// defaults, read from the built binary, and the image's entry point and
// environment, read from the Dockerfile.
type facts struct {
	bin             string            // the built merch-store, for the tests that run it
	shutdownTimeout time.Duration     // SHUTDOWN_TIMEOUT's default
	probeTimeout    time.Duration     // how long `merch-store -probe` waits
	entrypoint      string            // the server's path in the image
	imageEnv        map[string]string // the final stage's ENV
}

var (
	factsOnce sync.Once
	factsVal  facts
	factsErr  error
	factsDir  string // the build's temporary directory, removed by TestMain
)

func TestMain(m *testing.M) {
	code := m.Run()
	if factsDir != "" {
		_ = os.RemoveAll(factsDir)
	}
	os.Exit(code)
}

// mustFacts builds cmd/merch-store once per test binary and reads the
// defaults it prints.
func mustFacts(tb testing.TB) facts {
	tb.Helper()
	factsOnce.Do(func() { factsVal, factsErr = readFacts() })
	if factsErr != nil {
		tb.Fatal(factsErr)
	}
	return factsVal
}

var (
	shutdownDefaultRE = regexp.MustCompile(`(?m)^\s*-shutdown-timeout duration\n.*\(default ([^)]+)\)`)
	probeTimeoutRE    = regexp.MustCompile(`GET URL within (\S+?);`)
)

func readFacts() (facts, error) {
	dir, err := os.MkdirTemp("", "deploy-test-")
	if err != nil {
		return facts{}, err
	}
	factsDir = dir
	f := facts{bin: filepath.Join(dir, "merch-store")}
	if out, err := exec.Command("go", "build", "-o", f.bin, "merch/cmd/merch-store").CombinedOutput(); err != nil {
		return f, errors.New("go build merch/cmd/merch-store: " + err.Error() + "\n" + string(out))
	}
	help, _ := runBinary(f.bin, "-h")
	m := shutdownDefaultRE.FindStringSubmatch(help)
	if m == nil {
		return f, errors.New("merch-store -h shows no -shutdown-timeout default:\n" + help)
	}
	if f.shutdownTimeout, err = time.ParseDuration(m[1]); err != nil {
		return f, err
	}
	usage, _ := runBinary(f.bin, "-probe")
	if m = probeTimeoutRE.FindStringSubmatch(usage); m == nil {
		return f, errors.New("merch-store -probe shows no timeout in its usage:\n" + usage)
	}
	if f.probeTimeout, err = time.ParseDuration(m[1]); err != nil {
		return f, err
	}
	df, err := parseDockerfile("../Dockerfile")
	if err != nil {
		return f, err
	}
	final := df.stages[len(df.stages)-1]
	if len(final.entrypoint) == 0 {
		return f, errors.New("Dockerfile: the final stage has no exec-form ENTRYPOINT")
	}
	f.entrypoint, f.imageEnv = final.entrypoint[0], final.env
	return f, nil
}

// runBinary runs bin with an empty environment and returns its combined
// output and exit status.
func runBinary(bin string, args ...string) (string, int) {
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &exit):
		return out.String(), exit.ExitCode()
	}
	return out.String() + err.Error(), -1
}

// checkProbeCommand returns what is wrong with a healthcheck command
// (exec form) meant to probe the server's readiness on adminAddr.
func checkProbeCommand(f facts, cmd []string, adminAddr string) []string {
	if len(cmd) != 3 || cmd[0] != f.entrypoint || cmd[1] != "-probe" {
		return []string{"healthcheck must be [" + f.entrypoint + " -probe URL], got " + strings.Join(cmd, " ")}
	}
	u, err := url.Parse(cmd[2])
	if err != nil {
		return []string{"probe URL: " + err.Error()}
	}
	var problems []string
	_, adminPort, err := net.SplitHostPort(adminAddr)
	if err != nil {
		problems = append(problems, "ADMIN_ADDR "+adminAddr+": "+err.Error())
	}
	if u.Scheme != "http" || u.Hostname() != "127.0.0.1" || u.Port() != adminPort {
		problems = append(problems, "probe URL "+cmd[2]+" must be http://127.0.0.1:"+adminPort+" (ADMIN_ADDR "+adminAddr+", from inside the container)")
	}
	if u.Path != "/readyz" {
		problems = append(problems, "probe URL "+cmd[2]+" must ask /readyz")
	}
	return problems
}

// TestProbeBinary runs the built binary's probe with an empty environment
// (no DATABASE_URL, no JWT_SECRET): it must answer by the status alone.
func TestProbeBinary(t *testing.T) {
	f := mustFacts(t)
	srv := newStatusServer(t)
	for _, tc := range []struct {
		path string
		code int
	}{{"/200", 0}, {"/503", 1}} {
		out, code := runBinary(f.bin, "-probe", srv+tc.path)
		if code != tc.code {
			t.Errorf("merch-store -probe %s%s: exit %d, want %d; output %q", srv, tc.path, code, tc.code, out)
		}
	}
}

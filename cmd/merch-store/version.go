package main

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is set at build time (go build -ldflags "-X main.version=v1.2.3");
// empty means the module version the go command recorded.
var version string

// errVersion is LoadConfig's answer to -version: print versionLine, exit 0.
var errVersion = errors.New("version requested")

// buildVersion returns the version and VCS revision of this binary, as
// merch_build_info and -version show them: the -X version, else the main
// module's version ("(devel)" for a plain go build), and vcs.revision
// ("unknown" without VCS stamping, e.g. a build outside a checkout).
func buildVersion() (ver, revision string) {
	ver, revision = version, "unknown"
	info, ok := debug.ReadBuildInfo()
	if !ok {
		if ver == "" {
			ver = "unknown"
		}
		return ver, revision
	}
	if ver == "" {
		ver = info.Main.Version
	}
	if ver == "" {
		ver = "unknown"
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && s.Value != "" {
			revision = s.Value
		}
	}
	return ver, revision
}

// versionLine is what -version prints.
func versionLine() string {
	ver, rev := buildVersion()
	return fmt.Sprintf("merch-store version=%s revision=%s goversion=%s", ver, rev, runtime.Version())
}

// Tests for the container build: the Dockerfile keeps a static
// cross-compiled build on a minimal base, and both platforms are documented.
package container

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction with continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, ARG, RUN, ...
	args string
}

func parseDockerfile(t *testing.T, file string) []instruction {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur string
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "#") || (l == "" && cur == "") {
			continue
		}
		if s, ok := strings.CutSuffix(l, `\`); ok {
			cur += s + " "
			continue
		}
		cur += l
		if f := strings.Fields(cur); len(f) > 0 {
			out = append(out, instruction{strings.ToUpper(f[0]), strings.TrimSpace(strings.TrimPrefix(cur, f[0]))})
		}
		cur = ""
	}
	return out
}

func TestDockerfile(t *testing.T) {
	ins := parseDockerfile(t, "Dockerfile")
	var froms []instruction
	var buildRun, entrypoint, user string
	args := map[string]bool{}
	for _, in := range ins {
		switch in.cmd {
		case "FROM":
			froms = append(froms, in)
		case "ARG":
			for _, a := range strings.Fields(in.args) {
				name, _, _ := strings.Cut(a, "=")
				args[name] = true
			}
		case "RUN":
			if strings.Contains(in.args, "go build") {
				buildRun = in.args
			}
		case "ENTRYPOINT":
			entrypoint = in.args
		case "USER":
			user = in.args
		}
	}
	if len(froms) != 2 {
		t.Fatalf("%d FROM lines, want 2 (builder and final)", len(froms))
	}
	if b := froms[0].args; !strings.Contains(b, "--platform=$BUILDPLATFORM") || !strings.Contains(b, "golang:") {
		t.Errorf("builder stage %q: want FROM --platform=$BUILDPLATFORM golang:...", b)
	}
	final := froms[1].args
	if !strings.HasPrefix(final, "gcr.io/distroless/static") && final != "scratch" {
		t.Errorf("final stage %q: want distroless/static or scratch", final)
	}
	for _, a := range []string{"TARGETOS", "TARGETARCH", "VERSION"} {
		if !args[a] {
			t.Errorf("no ARG %s", a)
		}
	}
	for _, want := range []string{
		"CGO_ENABLED=0",
		"GOOS=$TARGETOS",
		"GOARCH=$TARGETARCH",
		"-trimpath",
		"-s -w",
		"-X github.com/siftr-probe/siftr-probe/internal/buildinfo.Version=${VERSION}",
		"./cmd/siftr-probe",
	} {
		if !strings.Contains(buildRun, want) {
			t.Errorf("the go build RUN lacks %q:\n%s", want, buildRun)
		}
	}
	if strings.Contains(buildRun, "CGO_ENABLED=1") {
		t.Error("the build enables cgo; the final image has no libc")
	}
	if !regexp.MustCompile(`^\["/[^"]+/siftr-probe"\]$`).MatchString(entrypoint) {
		t.Errorf("ENTRYPOINT %s: want the exec form of the binary's absolute path", entrypoint)
	}
	if user == "" {
		t.Error("no USER: the image should not default to root (deployments opt in, see the Dockerfile)")
	}
}

// TestLinkerTargetExists checks the -X target is a string variable in the
// main module, since -X on a missing symbol is silently ignored.
func TestLinkerTargetExists(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "internal", "buildinfo", "buildinfo.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^var Version\s*(string\s*)?=\s*""`).Match(src) && !regexp.MustCompile(`(?m)^\s*Version\s+string`).Match(src) {
		t.Error("internal/buildinfo has no `var Version = \"\"` for -ldflags -X to set")
	}
}

// TestGoVersion checks the builder image is at least the go line of the
// main module's go.mod.
func TestGoVersion(t *testing.T) {
	mod, err := os.ReadFile(filepath.Join("..", "..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+)\.(\d+)`).FindSubmatch(mod)
	df, _ := os.ReadFile("Dockerfile")
	d := regexp.MustCompile(`(?m)^ARG GO_VERSION=(\d+)\.(\d+)`).FindSubmatch(df)
	if m == nil || d == nil {
		t.Fatalf("go.mod go line %q, Dockerfile GO_VERSION %q", m, d)
	}
	if string(m[1]) != string(d[1]) || len(d[2]) < len(m[2]) || (len(d[2]) == len(m[2]) && string(d[2]) < string(m[2])) {
		t.Errorf("Dockerfile GO_VERSION %s.%s is older than go.mod's go %s.%s", d[1], d[2], m[1], m[2])
	}
}

func TestPlatformsDocumented(t *testing.T) {
	const buildx = "--platform linux/amd64,linux/arm64"
	for _, f := range []string{"Dockerfile", "README.md", filepath.Join("..", "README.md")} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), buildx) {
			t.Errorf("%s does not document `docker buildx build %s`", f, buildx)
		}
	}
	sh, err := os.ReadFile("build.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"linux/amd64 linux/arm64", "CGO_ENABLED=0", "-trimpath", "internal/buildinfo.Version="} {
		if !strings.Contains(string(sh), want) {
			t.Errorf("build.sh lacks %q", want)
		}
	}
}

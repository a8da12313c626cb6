// Package flags knows siftr-probe's command-line flags and the environment
// variables that set them, so the deployment tests can check that every
// SIFTR_PROBE_* setting they ship names a real flag.
package flags

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Known are the flags of `siftr-probe --help` that deployments may set.
var Known = []string{
	"iface", "port", "ppl", "logfile", "format", "state", "workers",
	"block-timeout", "block-size", "ring-size", "duration", "netns",
	"metrics-addr", "quiet", "status-interval", "version",
	"all-netns", "netns-include", "netns-exclude", "max-netns", "log-per-netns", "node-name", "kubeconfig",
	"control", "start-disabled",
}

// Pending are flags a deployment sets that the binary is about to get (the
// fleet component's --all-netns). TestKnownMatchesBinary fails once the
// binary defines one, so that it moves to Known.
var Pending = []string{}

// EnvName is the environment variable that sets a flag, as the binary
// derives it: SIFTR_PROBE_ + upper case, dashes as underscores.
func EnvName(flag string) string {
	return "SIFTR_PROBE_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// FlagName is the flag an environment variable sets, or "" if the name does
// not have the SIFTR_PROBE_ form.
func FlagName(env string) string {
	rest, ok := strings.CutPrefix(env, "SIFTR_PROBE_")
	if !ok || rest == "" {
		return ""
	}
	return strings.ToLower(strings.ReplaceAll(rest, "_", "-"))
}

// IsKnown reports whether env is EnvName(f) for a flag f in Known or
// Pending.
func IsKnown(env string) bool {
	for _, k := range append(Known[:len(Known):len(Known)], Pending...) {
		if EnvName(k) == env {
			return true
		}
	}
	return false
}

var flagName = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)

// flagSetMethods are the flag.FlagSet methods that define a flag; the name
// is their first string-literal argument.
var flagSetMethods = map[string]bool{
	"Bool": true, "BoolVar": true, "BoolFunc": true, "Duration": true, "DurationVar": true,
	"Float64": true, "Float64Var": true, "Func": true, "Int": true, "IntVar": true,
	"Int64": true, "Int64Var": true, "String": true, "StringVar": true, "TextVar": true,
	"Uint": true, "UintVar": true, "Uint64": true, "Uint64Var": true, "Var": true,
}

// FromSource returns the flag names defined by calls such as
// fs.StringVar(&v, "iface", ...) in the non-test Go files of dir, sorted.
// It is a syntactic scan: a method of that name on another type with a
// lower-case string literal argument would count too.
func FromSource(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		f, err := parser.ParseFile(fset, name, src, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || !flagSetMethods[sel.Sel.Name] {
				return true
			}
			for _, a := range call.Args {
				lit, ok := a.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					continue
				}
				if s, err := strconv.Unquote(lit.Value); err == nil && flagName.MatchString(s) {
					seen[s] = true
				}
				break
			}
			return true
		})
	}
	out := make([]string, 0, len(seen))
	for s := range seen {
		out = append(out, s)
	}
	sort.Strings(out)
	return out, nil
}

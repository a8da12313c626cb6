// Package buildinfo reports the program's version and build details.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is set at link time (-ldflags "-X .../internal/buildinfo.Version=v1.2.3");
// otherwise it is taken from the module and VCS information Go embeds.
var Version = ""

// Info describes the running binary.
type Info struct {
	Version   string
	Revision  string
	GoVersion string
}

// Get returns the build information.
func Get() Info {
	i := Info{Version: Version, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if i.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				i.Revision = s.Value[:12]
			}
		}
	}
	if i.Version == "" {
		i.Version = "devel"
	}
	return i
}

// String is the one-line version text.
func (i Info) String() string {
	s := fmt.Sprintf("siftr-probe %s (%s, %s/%s", i.Version, i.GoVersion, runtime.GOOS, runtime.GOARCH)
	if i.Revision != "" {
		s += ", " + i.Revision
	}
	return s + "; log format SIFTR 1.3.0)"
}

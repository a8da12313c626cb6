#!/usr/bin/env bash
# Cross-build static siftr-probe binaries for linux/amd64 and linux/arm64 and
# check that each is a static ELF for the right machine. This is the same
# build the Dockerfile runs, without a container engine.
#
# Usage: deploy/container/build.sh [OUTDIR]   (default deploy/container/out)
# Env:   VERSION   version stamped into the binary (default: git describe, else devel)
#        PLATFORMS space-separated GOOS/GOARCH list (default "linux/amd64 linux/arm64")
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$here/out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
platforms=${PLATFORMS:-linux/amd64 linux/arm64}
if [[ -z ${VERSION:-} ]]; then
	VERSION=$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo devel)
fi
pkg=github.com/siftr-probe/siftr-probe

fail() { echo "build.sh: $*" >&2; exit 1; }

# check_static FILE GOARCH: the ELF has no program interpreter and no dynamic
# section, and its machine matches GOARCH.
check_static() {
	local f=$1 arch=$2 machine
	case $arch in
	amd64) machine='X86-64|x86-64' ;;
	arm64) machine='AArch64|aarch64|ARM aarch64' ;;
	*) machine='.' ;;
	esac
	if command -v readelf >/dev/null; then
		readelf -h "$f" | grep -Eq "Machine:.*($machine)" || fail "$f: wrong ELF machine for $arch"
		if readelf -lW "$f" | grep -Eq '^ *(INTERP|DYNAMIC) '; then
			fail "$f: dynamically linked (has INTERP or DYNAMIC program header)"
		fi
		echo "  readelf: $arch ELF, no INTERP/DYNAMIC program header"
	elif command -v file >/dev/null; then
		local desc
		desc=$(file -b "$f")
		grep -Eq "$machine" <<<"$desc" || fail "$f: wrong ELF machine for $arch: $desc"
		grep -q 'statically linked' <<<"$desc" || fail "$f: not statically linked: $desc"
		echo "  file: $desc"
	else
		echo "  (no readelf or file: relying on the build settings below)"
	fi
	# The build settings Go embeds must say cgo was off.
	local info
	info=$(go version -m "$f")
	grep -Eq $'^\tbuild\tCGO_ENABLED=0$' <<<"$info" || fail "$f: not built with CGO_ENABLED=0"
	grep -Eq $'^\tbuild\tGOARCH='"$arch"'$' <<<"$info" || fail "$f: GOARCH is not $arch"
	echo "  go version -m: CGO_ENABLED=0 GOARCH=$arch"
}

cd "$root"
for p in $platforms; do
	goos=${p%/*} goarch=${p#*/}
	bin="$out/siftr-probe-$goos-$goarch"
	echo "building $bin (version $VERSION)"
	CGO_ENABLED=0 GOOS=$goos GOARCH=$goarch go build -trimpath \
		-ldflags "-s -w -X $pkg/internal/buildinfo.Version=$VERSION" \
		-o "$bin" ./cmd/siftr-probe
	check_static "$bin" "$goarch"
	if [[ $goos == $(go env GOHOSTOS) && $goarch == $(go env GOHOSTARCH) ]]; then
		v=$("$bin" --version)
		grep -qF -- "$VERSION" <<<"$v" || fail "$bin --version printed \"$v\", want it to contain $VERSION"
		echo "  --version: $v"
	fi
done
(cd "$out" && sha256sum siftr-probe-* >SHA256SUMS)
echo "ok: static binaries in $out"

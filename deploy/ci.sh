#!/usr/bin/env bash
# CI for deploy/: cross-build the static binaries the container image ships,
# then vet and test the deploy module (manifests, systemd unit, logrotate,
# Dockerfile). Run from anywhere: bash deploy/ci.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
step() { printf '\n== deploy: %s ==\n' "$*"; }

step "cross-build linux/amd64 and linux/arm64 (CGO_ENABLED=0), check static"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
bash "$here/container/build.sh" "$out"

cd "$here"
step "gofmt"
unformatted=$(gofmt -l .)
if [[ -n $unformatted ]]; then echo "gofmt would change:"; echo "$unformatted"; exit 1; fi

step "go.mod and go.sum are tidy"
go mod tidy -diff

step "go vet"
go vet ./...

step "go test"
go test -count=1 ./...

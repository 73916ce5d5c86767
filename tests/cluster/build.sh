#!/usr/bin/env bash
# Build the binaries of the test control plane from the Go module proxy, pinned
# by tests/cluster/versions.env, into a cache outside the repository:
#
#   $KUBETUNE_CACHE (default ~/.cache/kubetune)/
#     k8s-<v>/bin/{kube-apiserver,kube-controller-manager,kube-scheduler[,kubectl]}
#     etcd-<v>/bin/etcd
#     kwok-<v>/bin/kwok
#
# A second run only checks that each binary exists and reports the pinned
# version, so it costs seconds. Usage: tests/cluster/build.sh [--force]
#
# Each component gets its own throw-away wrapper module (under the cache, never
# in the repo): k8s.io/kubernetes cannot be `go install`ed directly because its
# go.mod replaces the k8s.io/* staging modules with ./staging paths, and etcd
# and kwok are kept out of the Kubernetes dependency graph so that MVS cannot
# move any of them to versions their authors never tested.
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"

FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

CACHE="${KUBETUNE_CACHE:-$HOME/.cache/kubetune}"
K8S_DIR="$CACHE/k8s-$K8S_VERSION"
ETCD_DIR="$CACHE/etcd-$ETCD_VERSION"
KWOK_DIR="$CACHE/kwok-$KWOK_VERSION"

# The toolchain on PATH builds everything: a `toolchain` line in some go.mod
# must not make go try to download another one (there is no internet here).
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -trimpath"
# Go's build cache for these builds is about 4.6 GB and is never read again once the
# binaries are cached, so it lives in the cache and goes when every build succeeded:
# on CI's disk it sat beside two torch venvs and a test ran out of space (c786f92's run).
export GOCACHE="$CACHE/.go-build"
# The machine is shared; builds must not starve other people's work.
NICE=(nice -n 10)

CURRENT_STEP=""
# fd 3 is the real stderr: the trap may fire inside a step whose output goes to a log.
exec 3>&2
on_error() {
    local rc=$?
    trap - ERR
    echo "build.sh: FAILED in step '$CURRENT_STEP' (exit $rc): '$BASH_COMMAND'" >&3
    if [[ -n "${STEP_LOG:-}" && -s "$STEP_LOG" ]]; then
        echo "build.sh: last lines of its output ($STEP_LOG):" >&3
        tail -n 40 "$STEP_LOG" >&3
    fi
    exit "$rc"
}
trap on_error ERR

# Runs one named step, logging its output to a file and timing it.
step() {
    local name="$1"; shift
    CURRENT_STEP="$name"
    STEP_LOG="$CACHE/logs/$(printf '%s' "$name" | tr -c 'a-zA-Z0-9._-' '_').log"
    mkdir -p "$CACHE/logs"
    echo "==> $name"
    local t0=$SECONDS
    "$@" >"$STEP_LOG" 2>&1
    echo "    done in $((SECONDS - t0))s"
}

go_version_ok() {
    local need="$1" have
    have="$(go env GOVERSION)"   # e.g. go1.26.8
    # sort -V orders versions; the needed one must come first (or be equal).
    [[ "$(printf '%s\n%s\n' "go$need" "$have" | sort -V | head -1)" == "go$need" ]]
}

# --- version checks (the warm path) ---------------------------------------

minor_of() { local v="${1#v}"; v="${v#*.}"; echo "${v%%.*}"; }

has_version() {   # binary, expected substring of its --version output
    [[ -x "$1" ]] || return 1
    local out
    out="$("$1" --version 2>&1 || true)"
    [[ "$out" == *"$2"* ]]
}

kubectl_version() {  # prints gitVersion of a kubectl binary, or nothing
    "$1" version --client -o json 2>/dev/null \
        | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p' | head -1
}

# Debian's kubectl is used when its minor is within the supported skew (+-1)
# of the apiserver; otherwise ours is built from the same Kubernetes module.
need_own_kubectl() {
    local sys
    sys="$(command -v kubectl || true)"
    [[ -z "$sys" || "$sys" == "$K8S_DIR/bin/kubectl" ]] && return 0
    local v; v="$(kubectl_version "$sys")"
    [[ -z "$v" ]] && return 0
    local skew=$(( $(minor_of "$v") - $(minor_of "$K8S_VERSION") ))
    if (( skew < -1 || skew > 1 )); then
        echo "kubectl on PATH ($sys) is $v: more than one minor from $K8S_VERSION; kubectl $K8S_VERSION is built here"
        return 0
    fi
    echo "kubectl on PATH ($sys) is $v: within one minor of $K8S_VERSION; using it"
    return 1
}

K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler)
if need_own_kubectl; then K8S_CMDS+=(kubectl); fi

k8s_ok() {
    local c
    for c in "${K8S_CMDS[@]}"; do
        if [[ "$c" == kubectl ]]; then
            [[ "$(kubectl_version "$K8S_DIR/bin/kubectl")" == "$K8S_VERSION" ]] || return 1
        else
            has_version "$K8S_DIR/bin/$c" "Kubernetes $K8S_VERSION" || return 1
        fi
    done
}
etcd_ok() { has_version "$ETCD_DIR/bin/etcd" "etcd Version: ${ETCD_VERSION#v}"; }
kwok_ok() { has_version "$KWOK_DIR/bin/kwok" "$KWOK_VERSION"; }

# --- builders ----------------------------------------------------------------

# Creates (or reuses) a wrapper module: requires $2@$3 with extra go.mod edits.
init_wrapper() {
    local dir="$1" mod="$2" ver="$3"
    rm -rf "$dir"
    mkdir -p "$dir"
    cd "$dir"
    go mod init kubetune.local/build >/dev/null 2>&1
    go mod edit -require="$mod@$ver"
}

k8s_resolve() {
    local src="$K8S_DIR/src"
    init_wrapper "$src" k8s.io/kubernetes "$K8S_VERSION"
    local gomod staging=() m
    gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
        | sed -n 's/.*"GoMod": *"\([^"]*\)".*/\1/p')"
    [[ -f "$gomod" ]] || { echo "no go.mod for k8s.io/kubernetes@$K8S_VERSION"; return 1; }
    # Staging modules are the k8s.io/* requirements pinned at v0.0.0; their
    # published tags are v0.<minor>.<patch> of the same release.
    mapfile -t staging < <(awk '$2 == "v0.0.0" && $1 ~ /^k8s\.io\// {print $1}' "$gomod")
    (( ${#staging[@]} > 0 )) || { echo "found no v0.0.0 staging requirements in $gomod"; return 1; }
    local sv="v0.${K8S_VERSION#v1.}"
    for m in "${staging[@]}"; do
        go mod edit -replace="$m=$m@$sv"
    done
    echo "replaced ${#staging[@]} staging modules with @$sv"
    local pkgs=()
    for m in "${K8S_CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$m"); done
    "${NICE[@]}" go get "${pkgs[@]}"
}

k8s_build_one() {
    local cmd="$1" major minor
    major="${K8S_VERSION#v}"; major="${major%%.*}"
    minor="$(minor_of "$K8S_VERSION")"
    local X="" p
    # component-base's version is what the binaries report and what the
    # apiserver derives its binary/emulation version from; client-go's is what
    # kubectl reports as its client version.
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        X+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
        X+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    cd "$K8S_DIR/src"
    "${NICE[@]}" go build -ldflags "-s -w$X" -o "$K8S_DIR/bin/.tmp-$cmd" "k8s.io/kubernetes/cmd/$cmd"
    mv -f "$K8S_DIR/bin/.tmp-$cmd" "$K8S_DIR/bin/$cmd"
}

etcd_resolve() {
    init_wrapper "$ETCD_DIR/src" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
    "${NICE[@]}" go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
}

etcd_build() {
    cd "$ETCD_DIR/src"
    # The module root of go.etcd.io/etcd/server/v3 is etcd's `package main`.
    "${NICE[@]}" go build -ldflags "-s -w" -o "$ETCD_DIR/bin/.tmp-etcd" go.etcd.io/etcd/server/v3
    mv -f "$ETCD_DIR/bin/.tmp-etcd" "$ETCD_DIR/bin/etcd"
}

kwok_resolve() {
    init_wrapper "$KWOK_DIR/src" sigs.k8s.io/kwok "$KWOK_VERSION"
    "${NICE[@]}" go get "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
}

kwok_build() {
    cd "$KWOK_DIR/src"
    "${NICE[@]}" go build -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
        -o "$KWOK_DIR/bin/.tmp-kwok" sigs.k8s.io/kwok/cmd/kwok
    mv -f "$KWOK_DIR/bin/.tmp-kwok" "$KWOK_DIR/bin/kwok"
}

# --- main ------------------------------------------------------------------

mkdir -p "$CACHE"
# Two test runs starting at once must not build into the same directories.
exec 9>"$CACHE/.build.lock"
flock 9

CURRENT_STEP="check go toolchain"
command -v go >/dev/null || { echo "build.sh: 'go' is not on PATH" >&2; exit 1; }
go_version_ok 1.26 || { echo "build.sh: need go >= 1.26, have $(go env GOVERSION)" >&2; exit 1; }

T_ALL=$SECONDS
echo "kubetune test control plane: kubernetes $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION"
echo "cache: $CACHE  ($(go env GOVERSION), GOFLAGS='$GOFLAGS')"

if (( FORCE == 0 )) && k8s_ok; then
    echo "==> kubernetes $K8S_VERSION (${K8S_CMDS[*]}): cached in $K8S_DIR/bin"
else
    mkdir -p "$K8S_DIR/bin"
    step "resolve k8s.io/kubernetes $K8S_VERSION modules" k8s_resolve
    for c in "${K8S_CMDS[@]}"; do
        step "build $c $K8S_VERSION" k8s_build_one "$c"
    done
    CURRENT_STEP="verify kubernetes binaries"
    k8s_ok || { echo "build.sh: built kubernetes binaries do not report $K8S_VERSION" >&2; exit 1; }
fi

if (( FORCE == 0 )) && etcd_ok; then
    echo "==> etcd $ETCD_VERSION: cached in $ETCD_DIR/bin"
else
    mkdir -p "$ETCD_DIR/bin"
    step "resolve etcd $ETCD_VERSION modules" etcd_resolve
    step "build etcd $ETCD_VERSION" etcd_build
    CURRENT_STEP="verify etcd"
    etcd_ok || { echo "build.sh: built etcd does not report ${ETCD_VERSION#v}" >&2; exit 1; }
fi

if (( FORCE == 0 )) && kwok_ok; then
    echo "==> kwok $KWOK_VERSION: cached in $KWOK_DIR/bin"
else
    mkdir -p "$KWOK_DIR/bin"
    step "resolve kwok $KWOK_VERSION modules" kwok_resolve
    step "build kwok $KWOK_VERSION" kwok_build
    CURRENT_STEP="verify kwok"
    kwok_ok || { echo "build.sh: built kwok does not report $KWOK_VERSION" >&2; exit 1; }
fi

rm -rf "$GOCACHE"
echo "all binaries ready in $((SECONDS - T_ALL))s"

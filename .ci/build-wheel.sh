#!/usr/bin/env bash
# Build into a wheelhouse shared by every clone on this machine, once, under a lock.
#
# usage: .ci/build-wheel.sh WHEELHOUSE 'BUILD COMMAND'
#
# The command runs under `sh -c` with $BUILD_DIR set to a fresh directory inside WHEELHOUSE and must put
# its outputs (the wheel and anything else to keep) there. Why each step:
# - flock: two clones installing at once would both build llama.cpp (minutes) into the same folder;
#   the second waits for the first instead.
# - the stamp is checked again once the lock is held: the other clone may have finished meanwhile.
# - the build writes into a private directory and its files are moved in (a rename, atomic: same file
#   system) only when it succeeded, so no clone ever installs a half-written wheel.
# - WHEELHOUSE/.built is written last, atomically (temporary file + rename), and never deleted here: a
#   failed or interrupted build leaves any earlier stamp, and any other clone's, as it was. The Makefile
#   marks the stamp .PRECIOUS so that make does not delete it on an interrupt either.
set -euo pipefail

if [ "$#" -ne 2 ]; then
    echo "usage: $0 WHEELHOUSE 'BUILD COMMAND'" >&2
    exit 2
fi
wheelhouse=$1
command=$2
stamp="$wheelhouse/.built"

mkdir -p "$wheelhouse"
exec 9>>"$wheelhouse/.lock"
if ! flock --nonblock 9; then
    echo "build-wheel.sh: waiting for another install's build to finish ($wheelhouse/.lock)" >&2
    flock 9
fi
if [ -e "$stamp" ]; then
    echo "build-wheel.sh: $wheelhouse already built (by another install)" >&2
    exit 0
fi

build_dir=$(mktemp -d "$wheelhouse/.build.XXXXXX")
trap 'rm -rf "$build_dir"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

BUILD_DIR="$build_dir" sh -c "$command"

shopt -s nullglob dotglob
built=("$build_dir"/*)
if [ "${#built[@]}" -eq 0 ]; then
    echo "build-wheel.sh: the build command succeeded but wrote nothing into \$BUILD_DIR" >&2
    exit 1
fi
mv -f "${built[@]}" "$wheelhouse"/
printf 'built %s by %s on %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$PWD" "$(hostname)" > "$stamp.tmp.$$"
mv -f "$stamp.tmp.$$" "$stamp"

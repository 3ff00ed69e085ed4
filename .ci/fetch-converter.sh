#!/usr/bin/env bash
# Unpack llama.cpp's HF -> GGUF converter (convert_hf_to_gguf.py, its `conversion` package and gguf-py) from the
# llama-cpp-python sdist of the version the suite runs, once per machine: usage fetch-converter.sh DIR VERSION PY.
# The sdist is what the wheel was built from; concurrent clones take a lock and the folder appears atomically.
set -euo pipefail
dest=$1 version=$2 py=$3
mkdir -p "$(dirname "$dest")"
exec 9>"$dest.lock"
flock 9
[ -f "$dest/.ready" ] && exit 0
tmp=$(mktemp -d "$dest.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$py" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$tmp/sdist"
root="llama_cpp_python-$version/vendor/llama.cpp"
tar -xzf "$tmp"/sdist/llama_cpp_python-"$version".tar.gz -C "$tmp" \
    "$root/convert_hf_to_gguf.py" "$root/conversion" "$root/gguf-py" "$root/LICENSE"
rm -rf "$dest"
mv "$tmp/$root" "$dest"
touch "$dest/.ready"

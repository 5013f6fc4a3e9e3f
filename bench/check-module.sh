#!/bin/sh
# Builds the module a second time with another check script in place of
# schema/lua/check.lua (bench/module.pl: bench/noop-check.lua, the ceiling):
# a copy of what the module is built from, under <build>/bench-<name>, made
# with the Makefile's own rules. Copies keep their times, so a second run
# rebuilds only what changed. Prints the path of the .so.
# usage: bench/check-module.sh <build dir> <name> <check script>
set -eu
mkdir -p "$1"
out=$(cd "$1" && pwd)/bench-$2
script=$(cd "$(dirname "$3")" && pwd)/$(basename "$3")
cd "$(dirname "$0")/.."
src=$out/src
rm -rf "$src"
mkdir -p "$src/schema"
cp -a Makefile config ngx_http_apimon_module "$src/"
cp -a schema/embed.sh schema/lua "$src/schema/"
cp -a "$script" "$src/schema/lua/check.lua"
make -s -C "$src" BUILD="$out/build" module > "$out/make.log" 2>&1 || { tail -20 "$out/make.log" >&2; exit 1; }
echo "$out/build/ngx_http_apimon_module.so"

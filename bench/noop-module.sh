#!/bin/sh
# Builds the module a second time with bench/noop-check.lua in place of
# schema/lua/check.lua (the ceiling of bench/module.pl): a copy of what the
# module is built from, under <build>/bench-noop, made with the Makefile's
# own rules. Copies keep their times, so a second run rebuilds only what
# changed. Prints the path of the .so.
# usage: bench/noop-module.sh <build dir>
set -eu
cd "$(dirname "$0")/.."
out=$1/bench-noop
src=$out/src
rm -rf "$src"
mkdir -p "$src/schema"
cp -a Makefile config ngx_http_apimon_module "$src/"
cp -a schema/embed.sh schema/lua "$src/schema/"
cp -a bench/noop-check.lua "$src/schema/lua/check.lua"
make -s -C "$src" BUILD="$out/build" module > "$out/make.log" 2>&1 || { tail -20 "$out/make.log" >&2; exit 1; }
echo "$out/build/ngx_http_apimon_module.so"

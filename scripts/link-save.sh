#!/usr/bin/env bash
# Linker wrapper of scripts/build-static.sh (`-C linker=scripts/link-save.sh`): links exactly as
# rustc asked (`cc "$@"`), then saves the link (its arguments, and copies of the inputs that
# rustc deletes afterwards: the LTO object and its temporary directory) next to the output, in
# <profile dir>/link/<output name>/:
#   args    one argument a line, temporary paths replaced by the saved copies under files/
#   stamp   sha256 of the output, so a later step can tell the saved link from a stale one
# scripts/build-static.sh then links the same objects again in under a second, unstripped for
# profiling and with a function order for the shipped binary, instead of repeating fat LTO.
set -euo pipefail
cc "$@"
out=
prev=
for a in "$@"; do
  [ "$prev" = -o ] && out=$a
  prev=$a
done
[ -n "$out" ] || exit 0
name=$(basename "$out")
dir=$(dirname "$out")
[ "$(basename "$dir")" = deps ] && dir=$(dirname "$dir")
save=$dir/link/${name%-*}
rm -rf "$save"
mkdir -p "$save/files"
n=0
for a in "$@"; do
  case "$a" in
    */rustc*/* | *.rcgu.o)
      # rustc's temporary directory (deps/rustcXXXXXX/) and the codegen unit's object; a path
      # that does not exist (an empty -L directory) stays as it is.
      if [ -e "$a" ]; then
        n=$((n + 1))
        copy=$save/files/$n-$(basename "$a")
        cp -a "$a" "$copy"
        a=$copy
      fi
      ;;
  esac
  printf '%s\n' "$a" >>"$save/args"
done
sha256sum "$out" | cut -d' ' -f1 >"$save/stamp"

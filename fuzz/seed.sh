#!/bin/sh
# Seed the fuzz corpus with the real captured requests and the kernel-checked negative blobs.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/corpus/ipt_abi_parse"
mkdir -p "$out"
for f in "$here"/../fixtures/captured/*/replace.bin "$here"/../fixtures/captured/*/add_counters.bin "$here"/../fixtures/negative/*.bin; do
    [ -f "$f" ] || continue
    cp "$f" "$out/$(basename "$(dirname "$f")")-$(basename "$f")"
done
echo "seeded $(ls "$out" | wc -l) files into $out"

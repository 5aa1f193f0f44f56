#!/bin/sh
# Seed the fuzz corpora from fixtures/ (captured from the real iptables-legacy and kernel):
#   corpus/ipt_abi_parse   the SET_REPLACE / ADD_COUNTERS blobs, captured and negative
#   corpus/wire_decode     one wire frame per captured sockopt call (requests), the kernel's
#                          answers as reply frames, and one frame of each other request kind
#   corpus/daemon_request  whole command sequences as the daemon receives them: every
#                          transcript (GET_INFO, GET_ENTRIES, SET_REPLACE, ADD_COUNTERS, ... in
#                          order), every captured ruleset applied to the initial table, and
#                          every negative blob sent after a GET_INFO (after the base ruleset
#                          for ADD_COUNTERS ones)
# Frames follow libbpfilter/src/wire.rs: "BPFL", u16 version 1, u16 kind, u32 length (LE).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
fx="$here/../fixtures"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

byte() { printf "\\$(printf %03o "$(($1 & 255))")"; }
le16() { byte "$1"; byte "$(($1 >> 8))"; }
le32() { le16 "$(($1 & 65535))"; le16 "$(($1 >> 16))"; }
# frame KIND BODYFILE: a whole frame on stdout.
frame() { printf 'BPFL'; le16 1; le16 "$1"; le32 "$(wc -c <"$2")"; cat "$2"; }
# sockopt OP(0 get, 1 set) OPTNAME OPTLEN INPUTFILE: an IPv4 sockopt request frame.
sockopt() {
    { byte 2; byte "$1"; le16 0; le32 "$2"; le32 "$3"; cat "$4"; } >"$tmp/body"
    frame 1 "$tmp/body"
}
# The input part of a get's optval the preload sends: name (32), header (40), revision (30).
get_input() {
    case $1 in 64) head -c 32 "$2" ;; 65) head -c 40 "$2" ;; *) head -c 30 "$2" ;; esac >"$tmp/in"
}
getinfo_filter() {
    { printf 'filter'; head -c 26 /dev/zero; } >"$tmp/name"
    sockopt 0 64 84 "$tmp/name"
}
# get_entries_for GET_INFO_ANSWER: GET_ENTRIES of filter with the size that answer gives.
get_entries_for() {
    size=$(od -An -tu4 -j80 -N4 "$1" | tr -d ' ')
    { printf 'filter'; head -c 26 /dev/zero; head -c 84 "$1" | tail -c 4; head -c 4 /dev/zero; } >"$tmp/hdr"
    sockopt 0 65 "$((40 + size))" "$tmp/hdr"
}

abi="$here/corpus/ipt_abi_parse"
wire="$here/corpus/wire_decode"
dmn="$here/corpus/daemon_request"
mkdir -p "$abi" "$wire" "$dmn"

for f in "$fx"/captured/*/replace.bin "$fx"/captured/*/add_counters.bin "$fx"/negative/*.bin; do
    [ -f "$f" ] || continue
    cp "$f" "$abi/$(basename "$(dirname "$f")")-$(basename "$f")"
done

# Transcripts: each call as a frame; each whole transcript as one daemon session.
for t in "$fx"/captured/*/transcript; do
    [ -f "$t/calls.tsv" ] || continue
    name=$(basename "$(dirname "$t")")
    : >"$dmn/transcript-$name"
    while IFS="$(printf '\t')" read -r seq pid op optname optlen ret err outlen prefix; do
        case $op in
        get) get_input "$optname" "$t/$prefix.in"; sockopt 0 "$optname" "$optlen" "$tmp/in" ;;
        set) sockopt 1 "$optname" "$optlen" "$t/$prefix.in" ;;
        *) continue ;;
        esac >"$tmp/frame"
        cp "$tmp/frame" "$wire/call-$name-$prefix"
        cat "$tmp/frame" >>"$dmn/transcript-$name"
        if [ -f "$t/$prefix.out" ]; then
            { le32 0; cat "$t/$prefix.out"; } >"$tmp/body"
            frame 32768 "$tmp/body" >"$wire/reply-$name-$prefix"
        fi
    done <"$t/calls.tsv"
done

# Captured rulesets applied to the initial table, then read back.
for d in "$fx"/captured/*/; do
    name=$(basename "$d")
    [ -f "$d/replace.bin" ] || continue
    [ "$(stat -c %s "$d/replace.bin")" -le 65536 ] || continue
    {
        getinfo_filter
        get_entries_for "$fx/captured/initial/get_info.bin"
        sockopt 1 64 "$(wc -c <"$d/replace.bin")" "$d/replace.bin"
        [ -f "$d/add_counters.bin" ] && sockopt 1 65 "$(wc -c <"$d/add_counters.bin")" "$d/add_counters.bin"
        get_entries_for "$d/get_info.bin"
    } >"$dmn/ruleset-$name"
done

# Negative blobs. ADD_COUNTERS ones target a 17-entry base: the control blob's ruleset.
addbase=""
for d in "$fx"/captured/*/; do
    [ -f "$d/add_counters.bin" ] && [ "$(stat -c %s "$d/add_counters.bin")" -eq "$(stat -c %s "$fx/negative/addcnt_control.bin")" ] &&
        cmp -s "$d/add_counters.bin" "$fx/negative/addcnt_control.bin" && addbase="$d/replace.bin" && break
done
grep -v '^#' "$fx/negative/MANIFEST.tsv" | while IFS="$(printf '\t')" read -r name errno ename kind cur desc; do
    f="$fx/negative/$name.bin"
    [ -f "$f" ] || continue
    {
        getinfo_filter
        if [ "$kind" = replace ]; then
            sockopt 1 64 "$(wc -c <"$f")" "$f"
        else
            [ -n "$addbase" ] && sockopt 1 64 "$(wc -c <"$addbase")" "$addbase"
            sockopt 1 65 "$(wc -c <"$f")" "$f"
        fi
    } >"$dmn/negative-$name"
    sockopt 1 "$([ "$kind" = replace ] && echo 64 || echo 65)" "$(wc -c <"$f")" "$f" >"$wire/negative-$name"
done

# The other request kinds, once each.
{ byte 2; byte 0; le16 0; } >"$tmp/b"; frame 2 "$tmp/b" >"$wire/table-names"
: >"$tmp/b"; frame 3 "$tmp/b" >"$wire/status"
byte 1 >"$tmp/b"; frame 4 "$tmp/b" >"$wire/counters-json"
{ byte 1; byte 0; le16 5; printf 'INPUT'; } >"$tmp/b"; frame 5 "$tmp/b" >"$wire/dump-input"
{ byte 0; byte 0; le16 0; } >"$tmp/b"; frame 6 "$tmp/b" >"$wire/flush"
for k in table-names status counters-json dump-input flush; do
    { getinfo_filter; cat "$wire/$k"; } >"$dmn/cli-$k"
done

for c in "$abi" "$wire" "$dmn"; do
    echo "seeded $(ls "$c" | wc -l) files into $c"
done

#!/usr/bin/env bash
# Sets up a backend host of xlb VIPs, as `xlb doctor` advises and docs/backends.md explains:
# the VIPs on loopback, the sysctls the forwarding mode needs, and for ipip/gue the `xlb decap`
# program that strips the LB's tunnel. Meant for backend hosts, which have no Rust toolchain.
#
# Idempotent: it changes only what is not already right, and a second run changes nothing.
# Every change is recorded in a state file (with a sysctl's previous value) so that `--undo`
# reverts exactly what this script did and nothing else. The default state directory is under
# /run because none of the changes survives a reboot either (see docs/backends.md to persist
# them), and it is not /run/xlb: systemd removes that one (the agent's RuntimeDirectory) when
# an agent on the same host stops.
#
# Everything it touches is per network namespace (addresses, net.ipv4.conf.* sysctls, the XDP
# attachment): run under `nsenter --net=...` it stays inside that namespace, except the pins,
# which live on the bpffs of the mount namespace (hence --pin-dir).
set -euo pipefail

PROG=${0##*/}
DEFAULT_PIN_DIR=/sys/fs/bpf/xlb-decap
DEFAULT_STATE_DIR=/run/xlb-backend
STATE_NAME=backend-setup.state

usage() {
    cat <<EOF
Usage: $PROG --mode MODE --vip ADDR [--vip ADDR...] --iface IF [--lb-src ADDR...] [options]
       $PROG --undo [--state-dir DIR] [--xlb PATH] [--dry-run]

Sets up this host as a backend of xlb VIPs forwarded in MODE (what \`xlb doctor\` prints
under "On each backend"), changing only what is not already right:
  every mode    sysctl net.ipv4.conf.{all,IF}.rp_filter 1 (strict) -> 2 (loose), if a VIP is IPv4
  dsr-l2        sysctl net.ipv4.conf.{all,IF}.arp_ignore 0 -> 1 and arp_announce -> 2, if a VIP
                is IPv4 (before the VIPs are added, so the host never answers ARP for them)
  every mode    ip addr add VIP/32 dev lo (IPv6: VIP/128 ... nodad)
  ipip, gue     xlb decap attach --iface IF --lb-src-v4 ... --lb-src-v6 ... --gue-port PORT
A second run changes nothing. Nothing survives a reboot (see docs/backends.md to persist it).
ipip and gue VIPs on one interface share one decap attachment: give every run for that
interface the same --lb-src and --gue-port (the last run's settings win).

Options:
  --mode ipip|gue|dsr-l2   how the LB forwards these VIPs (the VIPs' \`mode\` in its config)
  --vip ADDR               a VIP this backend serves; repeat, or separate with commas
  --iface IF               the interface that receives the LB's packets
  --lb-src ADDR            ipip/gue: the LB's lb-src-v4 and/or lb-src-v6 (at most one of each)
  --gue-port PORT          gue, ipip: the LB's gue-port (default 6080; the decap program
                           strips GUE on it in either mode)
  --xdp-mode MODE          ipip/gue: auto|native|generic, for \`xlb decap attach\` (default auto)
  --xlb PATH               the xlb binary (default: xlb on PATH; --undo: the one used to attach)
  --pin-dir DIR            xlb decap's pin directory (default $DEFAULT_PIN_DIR)
  --state-dir DIR          where the record for --undo is kept (default $DEFAULT_STATE_DIR)
  --undo                   revert every change recorded in the state directory, newest first;
                           values changed by someone else since are left alone
  --dry-run                print the commands, change nothing (needs no root)
  -h, --help               this text

Example (the LB's lb-src-v4 is 192.0.2.1; VIP 203.0.113.10 in ipip mode):
  $PROG --mode ipip --vip 203.0.113.10 --iface eth0 --lb-src 192.0.2.1
EOF
}

die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

usage_error() {
    printf "%s: %s\nTry '%s --help'.\n" "$PROG" "$*" "$PROG" >&2
    exit 2
}

say() {
    printf '%s: %s\n' "$PROG" "$*"
}

mode=""
vips=()
iface=""
lb_srcs=()
lb_v4=""
lb_v6=""
gue_port=""
xdp_mode=""
xlb=""
pin_dir=$DEFAULT_PIN_DIR
state_dir=$DEFAULT_STATE_DIR
undo=0
dry_run=0

need_value() {
    [ "$#" -ge 2 ] || usage_error "$1 needs a value"
}

while [ "$#" -gt 0 ]; do
    case $1 in
    --*=*)
        opt=${1%%=*}
        val=${1#*=}
        shift
        set -- "$opt" "$val" "$@"
        continue
        ;;
    --mode) need_value "$@"; mode=$2; shift 2 ;;
    --vip)
        need_value "$@"
        IFS=, read -r -a more <<<"$2"
        vips+=("${more[@]}")
        shift 2
        ;;
    --iface) need_value "$@"; iface=$2; shift 2 ;;
    --lb-src) need_value "$@"; lb_srcs+=("$2"); shift 2 ;;
    --gue-port) need_value "$@"; gue_port=$2; shift 2 ;;
    --xdp-mode) need_value "$@"; xdp_mode=$2; shift 2 ;;
    --xlb) need_value "$@"; xlb=$2; shift 2 ;;
    --pin-dir) need_value "$@"; pin_dir=$2; shift 2 ;;
    --state-dir) need_value "$@"; state_dir=$2; shift 2 ;;
    --undo) undo=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage_error "unexpected argument: $1" ;;
    esac
done

state=$state_dir/$STATE_NAME
changes=0

# Runs a command, or only prints it with --dry-run.
run() {
    printf '+ %s\n' "$*"
    changes=$((changes + 1))
    if [ "$dry_run" -eq 0 ]; then
        "$@"
    fi
}

# Appends a record to the state file (tab-separated fields), unless --dry-run.
record() {
    [ "$dry_run" -eq 0 ] || return 0
    local IFS=$'\t'
    printf '%s\n' "$*" >>"$state"
}

# True if the state holds a record of KIND whose field N is VALUE (awk alone: a `grep -q` at
# the end of a pipe could kill its writer with SIGPIPE, which pipefail reports as a failure).
has_record() {
    [ -f "$state" ] &&
        awk -F'\t' -v k="$1" -v n="$2" -v v="$3" '$1 == k && $n == v { f = 1 } END { exit !f }' "$state"
}

need_root() {
    if [ "$dry_run" -eq 0 ] && [ "$EUID" -ne 0 ]; then
        die "this changes addresses, sysctls and XDP programs: run it as root (--dry-run only prints the commands, without root)"
    fi
}

# The xlb binary as a command path, or an error that says how to give it.
resolve_xlb() {
    local want=$1 found
    found=$(command -v -- "$want" 2>/dev/null) ||
        die "xlb binary not found: '$want' (give its path with --xlb PATH)"
    [ -x "$found" ] || die "$found is not executable"
    printf '%s\n' "$found"
}

# ---------------------------------------------------------------------------------------------
# sysctls: /proc/sys/net is the caller's network namespace, so this touches no other one.

sysctl_path() {
    printf '/proc/sys/net/ipv4/conf/%s/%s\n' "$1" "$2"
}

# `sysctl` spells a dot in an interface name (eth0.100) as a slash.
sysctl_name() {
    printf 'net.ipv4.conf.%s.%s\n' "${1//./\/}" "$2"
}

# Sets net.ipv4.conf.<conf>.<key> to <want> if its value is one of <bad...>; records the old value.
fix_sysctl() {
    local conf=$1 key=$2 want=$3 path cur bad
    shift 3
    path=$(sysctl_path "$conf" "$key")
    [ -r "$path" ] || die "cannot read $path (no IPv4 on $conf?)"
    cur=$(<"$path")
    for bad in "$@"; do
        if [ "$cur" = "$bad" ]; then
            # Equivalent to the sysctl command printed, without needing procps on the host.
            printf '+ sysctl -w %s=%s\n' "$(sysctl_name "$conf" "$key")" "$want"
            changes=$((changes + 1))
            if [ "$dry_run" -eq 0 ]; then
                # The first record of a key keeps the value from before any run.
                if ! has_record sysctl 2 "$path"; then
                    record sysctl "$path" "$cur" "$want"
                fi
                printf '%s\n' "$want" >"$path"
            fi
            return 0
        fi
    done
}

# ---------------------------------------------------------------------------------------------
# Addresses

is_ipv4() {
    local a=$1 part parts
    [[ $a =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || return 1
    IFS=. read -r -a parts <<<"$a"
    for part in "${parts[@]}"; do
        [ "$((10#$part))" -le 255 ] || return 1
    done
}

is_ipv6() {
    [[ $1 =~ ^[0-9A-Fa-f:.]+$ && $1 == *:*:* ]] || return 1
    # ip is the judge of the finer syntax (it only reads here).
    ip -6 -o addr show dev lo to "$1/128" >/dev/null 2>&1
}

# ADDR/32 or ADDR/128, or an error naming the option.
host_prefix() {
    local a=$1 what=$2
    if is_ipv4 "$a"; then
        printf '%s/32\n' "$a"
    elif is_ipv6 "$a"; then
        printf '%s/128\n' "$a"
    else
        usage_error "$what '$a' is not an IPv4 or IPv6 address (give the address alone, no /prefix)"
    fi
}

# True if lo carries the address (with any prefix length).
on_lo() {
    [ -n "$(ip -o addr show dev lo to "$1")" ]
}

add_vip() {
    local prefix
    prefix=$(host_prefix "$1" "--vip")
    if on_lo "$prefix"; then
        return 0
    fi
    if [[ $prefix == */128 ]]; then
        # No duplicate address detection on lo: it would only delay the address's use.
        run ip addr add "$prefix" dev lo nodad
    else
        run ip addr add "$prefix" dev lo
    fi
    record addr lo "$prefix"
}

# ---------------------------------------------------------------------------------------------
# xlb decap

# Splits the --lb-src addresses by family into lb_v4 / lb_v6.
parse_lb_srcs() {
    local a
    for a in "${lb_srcs[@]}"; do
        if is_ipv4 "$a"; then
            [ -z "$lb_v4" ] || usage_error "two IPv4 --lb-src ($lb_v4, $a): xlb decap takes one per family"
            lb_v4=$a
        elif is_ipv6 "$a"; then
            [ -z "$lb_v6" ] || usage_error "two IPv6 --lb-src ($lb_v6, $a): xlb decap takes one per family"
            lb_v6=$a
        else
            usage_error "--lb-src '$a' is not an IPv4 or IPv6 address"
        fi
    done
}

attach_decap() {
    local bin=$1 link rec="" args
    args=(decap attach --iface "$iface")
    [ -z "$lb_v4" ] || args+=(--lb-src-v4 "$lb_v4")
    [ -z "$lb_v6" ] || args+=(--lb-src-v6 "$lb_v6")
    # Explicit in ipip mode too (xlb's default), so that an ipip and a gue run agree.
    args+=(--gue-port "${gue_port:-6080}")
    [ -z "$xdp_mode" ] || args+=(--xdp-mode "$xdp_mode")
    args+=(--pin-dir "$pin_dir")

    link=$pin_dir/link-$iface
    if [ -f "$state" ]; then
        rec=$(awk -F'\t' -v p="$pin_dir" -v i="$iface" '$1 == "decap" && $2 == p && $3 == i' "$state")
    fi
    if [ -n "$rec" ] && [ -e "$link" ] && [ "$(cut -f5 <<<"$rec")" = "${args[*]}" ]; then
        return 0
    fi
    if ! has_record decap 2 "$pin_dir" &&
        [ -d "$pin_dir" ] && [ -n "$(ls -A "$pin_dir")" ]; then
        die "$pin_dir already holds an xlb decap attachment that this script did not make" \
            "(its --undo would remove it): detach it first (xlb decap detach --pin-dir $pin_dir)," \
            "or give another --pin-dir"
    fi
    if [ -n "$rec" ] && [ "$(cut -f5 <<<"$rec")" != "${args[*]}" ]; then
        # One attachment serves the ipip and the gue VIPs of an interface alike.
        say "replacing the decap settings of an earlier run on $iface (every run for" \
            "this interface should give the same --lb-src and --gue-port): was: $(cut -f5 <<<"$rec")"
    fi
    # Attaching again swaps the new settings into the pinned link in place.
    run "$bin" "${args[@]}"
    if [ "$dry_run" -eq 0 ]; then
        if [ -n "$rec" ]; then
            # Replace the record of this attachment, keeping the others.
            local tmp
            tmp=$(mktemp "$state.XXXXXX")
            awk -F'\t' -v p="$pin_dir" -v i="$iface" '!($1 == "decap" && $2 == p && $3 == i)' \
                "$state" >"$tmp"
            mv -- "$tmp" "$state"
        fi
        record decap "$pin_dir" "$iface" "$bin" "${args[*]}"
    fi
}

# ---------------------------------------------------------------------------------------------

setup() {
    case $mode in
    ipip | gue | dsr-l2) ;;
    "") usage_error "--mode is required (ipip, gue or dsr-l2)" ;;
    *) usage_error "unknown --mode '$mode' (ipip, gue or dsr-l2)" ;;
    esac
    [ "${#vips[@]}" -gt 0 ] || usage_error "give at least one --vip"
    [ -n "$iface" ] || usage_error "--iface is required (the interface facing the LB)"
    if [ "$mode" = dsr-l2 ]; then
        [ "${#lb_srcs[@]}" -eq 0 ] || usage_error "--lb-src is for ipip and gue: dsr-l2 has no tunnel"
        [ -z "$xdp_mode" ] || usage_error "--xdp-mode is for ipip and gue: dsr-l2 needs no XDP program on the backend"
    else
        [ "${#lb_srcs[@]}" -gt 0 ] ||
            usage_error "$mode needs --lb-src: the LB's lb-src-v4 and/or lb-src-v6 (only its packets are decapsulated)"
    fi
    if [ -n "$gue_port" ]; then
        [ "$mode" != dsr-l2 ] || usage_error "--gue-port is for gue (and ipip)"
        if ! [[ $gue_port =~ ^[0-9]{1,5}$ ]] || [ "$gue_port" -lt 1 ] || [ "$gue_port" -gt 65535 ]; then
            usage_error "--gue-port '$gue_port' is not a port (1-65535)"
        fi
    fi
    case $xdp_mode in
    "" | auto | native | generic) ;;
    *) usage_error "unknown --xdp-mode '$xdp_mode' (auto, native or generic)" ;;
    esac
    local v any_v4=0 bin=""
    for v in "${vips[@]}"; do
        host_prefix "$v" "--vip" >/dev/null
        if is_ipv4 "$v"; then
            any_v4=1
        fi
    done
    if [ "$mode" != dsr-l2 ]; then
        parse_lb_srcs
        bin=$(resolve_xlb "${xlb:-xlb}")
    fi
    ip link show dev "$iface" >/dev/null 2>&1 ||
        die "no interface '$iface' in this network namespace (ip link show)"
    need_root
    if [ "$dry_run" -eq 0 ]; then
        # Only a directory created here gets 0700; a given one keeps its mode.
        (umask 077 && mkdir -p -- "$state_dir")
    fi

    # sysctls first: a dsr-l2 VIP on lo must never be answered for on the wire.
    if [ "$any_v4" -eq 1 ]; then
        if [ "$mode" = dsr-l2 ]; then
            fix_sysctl all arp_ignore 1 0
            fix_sysctl "$iface" arp_ignore 1 0
            fix_sysctl all arp_announce 2 0 1
            fix_sysctl "$iface" arp_announce 2 0 1
        fi
        # Strict reverse-path filtering drops the client's packets when the route back to the
        # client leaves by another interface; loose (2) is safe, and 0 is left alone.
        fix_sysctl all rp_filter 2 1
        fix_sysctl "$iface" rp_filter 2 1
    fi
    for v in "${vips[@]}"; do
        add_vip "$v"
    done
    if [ "$mode" != dsr-l2 ]; then
        attach_decap "$bin"
    fi

    if [ "$changes" -eq 0 ]; then
        say "already set up for $mode; nothing changed"
    elif [ "$dry_run" -eq 1 ]; then
        say "dry run: $changes change(s) to make; nothing changed"
    else
        say "$changes change(s) made; revert them with: $PROG --undo --state-dir $state_dir"
    fi
}

undo() {
    if [ -n "$mode$iface" ] || [ "${#vips[@]}" -gt 0 ] || [ "${#lb_srcs[@]}" -gt 0 ]; then
        usage_error "--undo reverts what the state records: give no --mode, --vip, --iface or --lb-src"
    fi
    if [ ! -f "$state" ]; then
        say "nothing to undo: no $state"
        return 0
    fi
    need_root
    local kind pin bin dev prefix path old set now done_pins=" "
    # The reverse order of setup: the decap programs, then the addresses, then the sysctls.
    while IFS=$'\t' read -r kind pin _ bin _; do
        [ "$kind" = decap ] || continue
        # One detach removes every attachment of a pin directory.
        [[ $done_pins != *" $pin "* ]] || continue
        done_pins+="$pin "
        if [ -e "$pin" ]; then
            bin=$(resolve_xlb "${xlb:-$bin}")
            run "$bin" decap detach --pin-dir "$pin"
        else
            say "$pin is already gone"
        fi
    done < <(tac -- "$state")
    while IFS=$'\t' read -r kind dev prefix; do
        [ "$kind" = addr ] || continue
        if on_lo "$prefix"; then
            run ip addr del "$prefix" dev "$dev"
        fi
    done < <(tac -- "$state")
    while IFS=$'\t' read -r kind path old set; do
        [ "$kind" = sysctl ] || continue
        if [ ! -e "$path" ]; then
            say "$path is gone (interface removed?): nothing to restore"
            continue
        fi
        now=$(<"$path")
        if [ "$now" != "$set" ]; then
            say "$path is $now now, not the $set this script set: left alone"
            continue
        fi
        printf '+ sysctl -w %s=%s\n' \
            "$(sysctl_name "$(basename "$(dirname "$path")")" "$(basename "$path")")" "$old"
        changes=$((changes + 1))
        if [ "$dry_run" -eq 0 ]; then
            printf '%s\n' "$old" >"$path"
        fi
    done < <(tac -- "$state")
    if [ "$dry_run" -eq 1 ]; then
        say "dry run: $changes change(s) to revert; nothing changed"
    else
        rm -f -- "$state"
        say "reverted $changes change(s)"
    fi
}

if [ "$undo" -eq 1 ]; then
    undo
else
    setup
fi

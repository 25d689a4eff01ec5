#!/usr/bin/env bash
# Installs a built xlb on a load-balancer host that has no Rust toolchain: the binary, the config
# directory with the example config (never overwriting one), the systemd unit and, where systemd
# does not mount bpffs itself, a mount unit for /sys/fs/bpf; with --with-bird also BIRD's node
# config and a drop-in that makes Debian's bird.service run it. Reads dist/ and examples/ next to
# this script's directory, so run it from a checkout or an unpacked release.
#
# Re-running it is an upgrade: changed files are replaced, identical ones left alone, the config
# kept. It never starts anything unless --enable is given.
set -euo pipefail

PROG=${0##*/}
SRC_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
# The path dist/xlb.service runs; rewritten to PREFIX/bin/xlb for another prefix.
UNIT_BINARY=/usr/local/bin/xlb
CONFIG_DIR=/etc/xlb
UNIT_DIR=/etc/systemd/system
BPFFS_UNIT=sys-fs-bpf.mount
# From this version on, systemd mounts /sys/fs/bpf itself (an "API file system") and refuses
# to load a mount unit for it.
SYSTEMD_MOUNTS_BPFFS=238
# --with-bird: the node config BIRD runs (dist/bird/xlb-node.conf) and the drop-in for Debian's
# bird.service (package bird2) that points BIRD at it.
BIRD_CONFIG=/etc/bird/xlb-node.conf
BIRD_DROPIN_DIR=$UNIT_DIR/bird.service.d
BIRD_DROPIN=$BIRD_DROPIN_DIR/xlb.conf

usage() {
    cat <<EOF
Usage: $PROG [options] XLB_BINARY
       $PROG --uninstall [options]

Installs the xlb binary built by \`cargo xtask build --release\`:
  PREFIX/bin/xlb                           the binary (mode 0755; replaced if it differs)
  $CONFIG_DIR/xlb.toml                         examples/xlb.toml, only if there is no config yet
  $UNIT_DIR/xlb.service           dist/xlb.service, running PREFIX/bin/xlb
  $UNIT_DIR/$BPFFS_UNIT      dist/$BPFFS_UNIT, only where systemd does not mount
                                           /sys/fs/bpf itself (before systemd $SYSTEMD_MOUNTS_BPFFS)
With --with-bird, for nodes that announce their VIPs over BGP (docs/announce.md), also:
  $BIRD_CONFIG                  dist/bird/xlb-node.conf (mode 0640, group bird), only if
                                           there is none yet
  $BIRD_DROPIN
                                           dist/systemd/bird-xlb.conf: bird.service runs that config
Starts nothing unless --enable is given.

Options:
  --prefix DIR          installation prefix (default /usr/local: the binary is DIR/bin/xlb)
  --destdir DIR         stage every file under DIR instead of / (packaging, tests); touches
                        nothing of the running system (no systemctl)
  --bpffs-unit WHEN     auto (default): install $BPFFS_UNIT only if systemd is older than
                        $SYSTEMD_MOUNTS_BPFFS (newer ones refuse it); yes; no
  --with-bird           also install BIRD's node config and bird.service drop-in (above); needs
                        Debian's bird2 package to be of use
  --enable              then: systemctl daemon-reload, enable --now the bpffs mount unit (if
                        installed) and xlb.service, with --with-bird also bird.service (restarted
                        if its drop-in or config changed); edit the configs first
  --uninstall           stop and disable xlb.service, remove the binary, the units and the
                        bird.service drop-in; keeps $CONFIG_DIR and $BIRD_CONFIG (your
                        configs); leaves BIRD running, and forwarding (\`xlb stop --detach\`
                        first to take the load balancer down)
  --dry-run             print the commands, change nothing
  -h, --help            this text
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

prefix=/usr/local
destdir=""
bpffs_unit=auto
enable=0
with_bird=0
uninstall=0
dry_run=0
binary=""

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
    --prefix) need_value "$@"; prefix=$2; shift 2 ;;
    --destdir) need_value "$@"; destdir=$2; shift 2 ;;
    --bpffs-unit) need_value "$@"; bpffs_unit=$2; shift 2 ;;
    --enable) enable=1; shift ;;
    --with-bird) with_bird=1; shift ;;
    --uninstall) uninstall=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) usage_error "unknown option: $1" ;;
    *)
        [ -z "$binary" ] || usage_error "one binary only (got '$binary' and '$1')"
        binary=$1
        shift
        ;;
    esac
done

# Paths stay unquoted in systemd's ExecStart= and in sed below: keep them plain.
[[ $prefix =~ ^/[A-Za-z0-9._/+-]*$ ]] ||
    usage_error "--prefix '$prefix' must be an absolute path of letters, digits and ._/+-"
prefix=${prefix%/}
if [ -n "$destdir" ]; then
    [[ $destdir == /* ]] || destdir=$PWD/$destdir
    destdir=${destdir%/}
fi
case $bpffs_unit in
auto | yes | no) ;;
*) usage_error "--bpffs-unit '$bpffs_unit': auto, yes or no" ;;
esac
[ "$enable" -eq 0 ] || [ -z "$destdir" ] ||
    usage_error "--enable acts on the running system: not with --destdir"
[ "$enable" -eq 0 ] || [ "$uninstall" -eq 0 ] || usage_error "--enable and --uninstall exclude each other"

bin_path=$destdir$prefix/bin/xlb
config_path=$destdir$CONFIG_DIR/xlb.toml
unit_path=$destdir$UNIT_DIR/xlb.service
bpffs_path=$destdir$UNIT_DIR/$BPFFS_UNIT
bird_config_path=$destdir$BIRD_CONFIG
bird_dropin_path=$destdir$BIRD_DROPIN
changes=0

# Runs a command, or only prints it with --dry-run.
run() {
    printf '+ %s\n' "$*"
    changes=$((changes + 1))
    if [ "$dry_run" -eq 0 ]; then
        "$@"
    fi
}

# True when this acts on the running system's systemd (no --destdir, systemd is PID 1).
live_systemd() {
    [ -z "$destdir" ] && [ -d /run/systemd/system ]
}

need_root() {
    if [ "$dry_run" -eq 0 ] && [ -z "$destdir" ] && [ "$EUID" -ne 0 ]; then
        die "installing into / needs root (or give --destdir DIR; --dry-run only prints)"
    fi
}

# Installs SRC as DEST with MODE unless DEST already is that; SHOWN names SRC in the output.
put() {
    local mode=$1 src=$2 dest=$3 shown=$4
    if [ -f "$dest" ] && cmp -s -- "$src" "$dest"; then
        if [ "$(stat -c %a -- "$dest")" != "${mode#0}" ]; then
            run chmod "$mode" -- "$dest"
        else
            say "unchanged: $dest"
        fi
        return 0
    fi
    printf '+ install -D -m %s %s %s\n' "$mode" "$shown" "$dest"
    changes=$((changes + 1))
    if [ "$dry_run" -eq 0 ]; then
        install -D -m "$mode" -- "$src" "$dest"
    fi
}

# The major version of the systemd on this host, or nothing.
systemd_version() {
    command -v systemctl >/dev/null 2>&1 || return 0
    systemctl --version 2>/dev/null | awk 'NR == 1 && $1 == "systemd" { sub(/[^0-9].*/, "", $2); print $2 }'
}

want_bpffs_unit() {
    local v
    case $bpffs_unit in
    yes) return 0 ;;
    no) return 1 ;;
    esac
    v=$(systemd_version)
    if [ -z "$v" ]; then
        say "no systemd found: $BPFFS_UNIT not installed (--bpffs-unit yes to install it anyway)"
        return 1
    fi
    if [ "$v" -ge "$SYSTEMD_MOUNTS_BPFFS" ]; then
        say "systemd $v mounts /sys/fs/bpf itself: $BPFFS_UNIT not needed, not installed"
        return 1
    fi
    return 0
}

# --with-bird: BIRD's node config (never overwriting one) and the bird.service drop-in.
install_bird() {
    if [ -z "$destdir" ] && ! command -v bird >/dev/null 2>&1 && [ ! -x /usr/sbin/bird ]; then
        say "BIRD is not installed here: \`apt-get install bird2\` for the drop-in to take effect"
    fi
    if [ -e "$bird_config_path" ]; then
        say "kept: $bird_config_path (never overwritten)"
    else
        put 0640 "$SRC_ROOT/dist/bird/xlb-node.conf" "$bird_config_path" "$SRC_ROOT/dist/bird/xlb-node.conf"
        # BIRD reads its config again as its own user on `birdc configure` (systemctl reload),
        # after dropping root: its group must be able to read the file (as Debian's bird.conf).
        if [ -z "$destdir" ] && getent group bird >/dev/null 2>&1; then
            run chgrp bird -- "$bird_config_path"
        fi
    fi
    put 0644 "$SRC_ROOT/dist/systemd/bird-xlb.conf" "$bird_dropin_path" "$SRC_ROOT/dist/systemd/bird-xlb.conf"
}

do_install() {
    [ -n "$binary" ] || usage_error "give the xlb binary to install (e.g. target/release/xlb)"
    [ -f "$binary" ] || die "no such file: $binary"
    local f
    local -a needed=(dist/xlb.service "dist/$BPFFS_UNIT" examples/xlb.toml)
    if [ "$with_bird" -eq 1 ]; then
        needed+=(dist/bird/xlb-node.conf dist/systemd/bird-xlb.conf)
    fi
    for f in "${needed[@]}"; do
        [ -f "$SRC_ROOT/$f" ] || die "$SRC_ROOT/$f is missing: run $PROG from an xlb checkout or release"
    done
    need_root

    put 0755 "$binary" "$bin_path" "$binary"

    if [ -e "$config_path" ]; then
        say "kept: $config_path (never overwritten)"
    else
        [ -d "$destdir$CONFIG_DIR" ] || run install -d -m 0755 -- "$destdir$CONFIG_DIR"
        put 0644 "$SRC_ROOT/examples/xlb.toml" "$config_path" "$SRC_ROOT/examples/xlb.toml"
    fi

    local unit_changes=$changes rendered shown=$SRC_ROOT/dist/xlb.service
    rendered=$(mktemp)
    # shellcheck disable=SC2064 # expand now: the local is gone when the trap runs
    trap "rm -f -- '$rendered'" EXIT
    sed "s|$UNIT_BINARY|$prefix/bin/xlb|g" "$SRC_ROOT/dist/xlb.service" >"$rendered"
    if [ "$prefix/bin/xlb" != "$UNIT_BINARY" ]; then
        shown="$shown (with $prefix/bin/xlb for $UNIT_BINARY)"
    fi
    put 0644 "$rendered" "$unit_path" "$shown"

    local bpffs=0
    if want_bpffs_unit; then
        bpffs=1
        if [ -e "$bpffs_path" ] && ! cmp -s -- "$SRC_ROOT/dist/$BPFFS_UNIT" "$bpffs_path"; then
            # Any unit mounting bpffs there does the job (Cilium ships one, for instance).
            say "kept: $bpffs_path (not xlb's, but it mounts the same)"
        else
            put 0644 "$SRC_ROOT/dist/$BPFFS_UNIT" "$bpffs_path" "$SRC_ROOT/dist/$BPFFS_UNIT"
        fi
    fi

    local bird_changes=$changes
    if [ "$with_bird" -eq 1 ]; then
        install_bird
    fi
    bird_changes=$((changes - bird_changes))

    if [ "$enable" -eq 1 ]; then
        [ "$dry_run" -eq 1 ] || live_systemd || die "--enable: systemd is not running here"
        run systemctl daemon-reload
        if [ "$bpffs" -eq 1 ] || [ -e "$bpffs_path" ]; then
            run systemctl enable --now "$BPFFS_UNIT"
        fi
        run systemctl enable --now xlb.service
        if [ "$with_bird" -eq 1 ]; then
            run systemctl enable bird.service
            if [ "$bird_changes" -gt 0 ]; then
                # A running BIRD keeps its command line and config until it restarts (which
                # withdraws and re-announces this node's VIPs: only when something changed).
                run systemctl restart bird.service
            else
                run systemctl start bird.service
            fi
        fi
    elif live_systemd && [ "$changes" -gt "$unit_changes" ]; then
        run systemctl daemon-reload
    fi

    if [ "$changes" -eq 0 ]; then
        say "already installed; nothing changed"
    elif [ "$dry_run" -eq 1 ]; then
        say "dry run: $changes change(s) to make; nothing changed"
    else
        say "$changes change(s) made"
        if [ "$enable" -eq 0 ] && [ -z "$destdir" ]; then
            say "next: edit $CONFIG_DIR/xlb.toml, check with \`xlb doctor --config $CONFIG_DIR/xlb.toml\`," \
                "start with \`systemctl enable --now xlb\`"
            if [ "$bird_changes" -gt 0 ]; then
                say "next: edit the defines of $BIRD_CONFIG, then \`systemctl enable bird\` and" \
                    "\`systemctl restart bird\` (a running BIRD keeps its old config until restarted)"
            fi
        fi
    fi
}

do_uninstall() {
    [ -z "$binary" ] || usage_error "--uninstall takes no binary"
    need_root
    if live_systemd && [ -e "$unit_path" ]; then
        # Stopping the agent leaves the pinned XDP program forwarding.
        run systemctl disable --now xlb.service
    fi
    if [ -e "$unit_path" ]; then
        run rm -f -- "$unit_path"
    fi
    # Only xlb's own mount unit goes, and bpffs stays mounted: other programs may pin there.
    if [ -e "$bpffs_path" ] && cmp -s -- "$SRC_ROOT/dist/$BPFFS_UNIT" "$bpffs_path"; then
        if live_systemd; then
            run systemctl disable "$BPFFS_UNIT"
        fi
        run rm -f -- "$bpffs_path"
    fi
    if [ -e "$bin_path" ]; then
        run rm -f -- "$bin_path"
    fi
    # The drop-in goes whether or not --with-bird is given (an uninstall removes all of xlb);
    # BIRD itself is left running: stopping it would withdraw this node's VIPs.
    local bird_dropped=0
    if [ -e "$bird_dropin_path" ]; then
        run rm -f -- "$bird_dropin_path"
        bird_dropped=1
        # The directory too, unless something else has a drop-in there.
        if [ -d "$destdir$BIRD_DROPIN_DIR" ] &&
            [ -z "$(find "$destdir$BIRD_DROPIN_DIR" -mindepth 1 -maxdepth 1 ! -name xlb.conf -print -quit)" ]; then
            run rmdir -- "$destdir$BIRD_DROPIN_DIR"
        fi
    fi
    if live_systemd && [ "$changes" -gt 0 ]; then
        run systemctl daemon-reload
    fi
    if [ -e "$destdir$CONFIG_DIR" ]; then
        say "kept: $destdir$CONFIG_DIR (your config; remove it by hand if it should go)"
    fi
    if [ -e "$bird_config_path" ]; then
        say "kept: $bird_config_path (your BIRD config; remove it by hand if it should go)"
    fi
    if [ "$bird_dropped" -eq 1 ] && live_systemd; then
        say "bird.service runs /etc/bird/bird.conf from its next restart; until then BIRD keeps" \
            "announcing this node's VIPs (\`systemctl restart bird\` or \`systemctl stop bird\`)"
    fi
    if [ "$changes" -eq 0 ]; then
        say "nothing installed; nothing changed"
    elif [ "$dry_run" -eq 1 ]; then
        say "dry run: $changes change(s) to make; nothing changed"
    else
        say "removed; forwarding, if it ran, continues until \`xlb stop --detach\`"
    fi
}

if [ "$uninstall" -eq 1 ]; then
    do_uninstall
else
    do_install
fi

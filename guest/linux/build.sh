#!/usr/bin/env bash
# Builds the virtio-ts UML guest: a User-Mode Linux 6.1 kernel (ARCH=um,
# x86_64) with the virtio-test driver built in, and an uncompressed newc
# initramfs (busybox + /bin/virtio + /bin/virtio-stress + /init).
#
#   guest/linux/build.sh            build (or reuse) and print the paths
#   guest/linux/build.sh --print-hash
#                                   print the hash of the current inputs (the name
#                                   build/uml/<hash> a build of them gets) and exit;
#                                   the UML tests compare it with build/uml/current
#   VT_BUILD_DIR=/x build.sh        put build/ somewhere else (default: <repo>/build)
#   VT_JOBS=4 build.sh              make -j (default: nproc)
#
# Outputs (cached by a hash over every input):
#   build/uml/<hash>/linux            the UML kernel (an ordinary host executable)
#   build/uml/<hash>/initramfs.cpio
#   build/uml/current -> <hash>       stable pointer to the latest build
# Shared work areas, reused across hashes so a driver change rebuilds little:
#   build/uml/src-<pkgver>/linux-source-6.1   extracted once per package version
#   build/uml/obj-<pkgver>/                   kbuild O= directory
set -euo pipefail

print_hash=0
case ${1:-} in
	'') ;;
	--print-hash) print_hash=1 ;;
	*) printf 'build.sh: ERROR: unknown argument %s (usage: build.sh [--print-hash])\n' "$1" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out_root=${VT_BUILD_DIR:-$repo/build}/uml
jobs=${VT_JOBS:-$(nproc)}
tarball=/usr/src/linux-source-6.1.tar.xz
t0=$(date +%s)

log() { printf 'build.sh: %s\n' "$*" >&2; }
die() { printf 'build.sh: ERROR: %s\n' "$*" >&2; exit 1; }

# --- 1. host prerequisites ---------------------------------------------------
pkgs=(linux-source-6.1 busybox-static cpio flex bison bc build-essential libelf-dev)
missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
if ((${#missing[@]})); then
	die "missing Debian packages: ${missing[*]}
  install them with:  apt-get install -y ${pkgs[*]}"
fi
[[ -f $tarball ]] || die "$tarball not found (reinstall: apt-get install --reinstall -y linux-source-6.1)"
[[ -x /bin/busybox ]] || die "/bin/busybox not found (apt-get install -y busybox-static)"
file_is_static() { ! LC_ALL=C ldd "$1" >/dev/null 2>&1; }
file_is_static /bin/busybox || die "/bin/busybox is not static: install busybox-static (apt-get install -y busybox-static)"

ksrc_ver=$(dpkg-query -W -f='${Version}' linux-source-6.1)
bb_ver=$(dpkg-query -W -f='${Version}' busybox-static)

# --- 2. cache key ------------------------------------------------------------
inputs=(
	build.sh uml.config
	driver/virtio_test.c driver/Kconfig driver/Makefile
	include/uapi/linux/virtio_test.h
	user/virtio.c user/virtio-stress.c
	initramfs/init
)
hash=$(
	for f in "${inputs[@]}"; do
		printf '== %s\n' "$f"
		cat "$here/$f"
	done
	printf 'linux-source-6.1 %s\nbusybox-static %s\n' "$ksrc_ver" "$bb_ver"
	gcc --version | head -n1
) || die "cannot read build inputs"
hash=$(printf '%s' "$hash" | sha256sum | cut -c1-16)
if ((print_hash)); then
	echo "$hash"
	exit 0
fi
out=$out_root/$hash

finish() {
	ln -sfn "$hash" "$out_root/current"
	echo "kernel:    $out/linux"
	echo "initramfs: $out/initramfs.cpio"
	echo "current:   $out_root/current -> $hash"
}

if [[ -f $out/linux && -f $out/initramfs.cpio ]]; then
	log "up to date ($hash)"
	finish
	exit 0
fi

mkdir -p "$out_root"
# One build at a time (the source and object trees are shared).
exec 9>"$out_root/.lock"
flock 9
if [[ -f $out/linux && -f $out/initramfs.cpio ]]; then
	finish
	exit 0
fi

# --- 3. kernel source, extracted once per package version -------------------
srcdir=$out_root/src-$ksrc_ver
src=$srcdir/linux-source-6.1
obj=$out_root/obj-$ksrc_ver
if [[ ! -f $srcdir/.extracted ]]; then
	log "extracting $tarball (once per linux-source version)"
	rm -rf "$srcdir"
	mkdir -p "$srcdir"
	tar -xJf "$tarball" -C "$srcdir"
	[[ -f $src/Makefile ]] || die "unexpected tarball layout: no $src/Makefile"
	touch "$srcdir/.extracted"
fi

# --- 4. our driver into the tree (idempotent; unchanged files keep mtime) ----
install_if_changed() { # src dst
	if ! cmp -s "$1" "$2"; then
		cp "$1" "$2.vt-tmp"
		mv "$2.vt-tmp" "$2"
	fi
}
append_snippet() { # tree-file snippet
	local f=$1 snip=$2
	[[ -f $f.vt-orig ]] || cp -p "$f" "$f.vt-orig"
	cat "$f.vt-orig" "$snip" >"$f.vt-new"
	install_if_changed "$f.vt-new" "$f"
	rm -f "$f.vt-new"
}
append_snippet "$src/drivers/virtio/Kconfig" "$here/driver/Kconfig"
append_snippet "$src/drivers/virtio/Makefile" "$here/driver/Makefile"
install_if_changed "$here/driver/virtio_test.c" "$src/drivers/virtio/virtio_test.c"
install_if_changed "$here/include/uapi/linux/virtio_test.h" "$src/include/uapi/linux/virtio_test.h"

# --- 5. configuration: tinyconfig + uml.config, then verified ----------------
kmake() { make -s -C "$src" O="$obj" ARCH=um "$@"; }
mkdir -p "$obj"
log "configuring (tinyconfig + uml.config)"
kmake tinyconfig >/dev/null
(cd "$src" && ARCH=um scripts/kconfig/merge_config.sh -m -O "$obj" "$obj/.config" "$here/uml.config" >/dev/null)
kmake olddefconfig >/dev/null
bad=()
while IFS= read -r line; do
	if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
		grep -qx -- "$line" "$obj/.config" || bad+=("$line (have: $(grep -E "^(# )?${BASH_REMATCH[1]}[= ]" "$obj/.config" || echo unset))")
	elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
		! grep -q "^${BASH_REMATCH[1]}=" "$obj/.config" || bad+=("$line (but it is set)")
	fi
done <"$here/uml.config"
if ((${#bad[@]})); then
	printf '  %s\n' "${bad[@]}" >&2
	die "kernel config does not have the options uml.config asks for (see above)"
fi

# --- 6. the kernel ------------------------------------------------------------
log "building the UML kernel (make -j$jobs linux)"
tk=$(date +%s)
kmake -j"$jobs" linux
log "kernel built in $(($(date +%s) - tk)) s"
[[ -x $obj/linux ]] || die "kernel build produced no $obj/linux"

# --- 7. user programs and the initramfs --------------------------------------
stage=$out_root/.stage-$hash
rm -rf "$stage"
mkdir -p "$stage/root"/{bin,sbin,dev,proc,sys,tmp,root,etc,mnt}
cc_user() { gcc -static -O2 -Wall -Wextra -Werror -I"$here/include/uapi" -o "$2" "$1"; }
cc_user "$here/user/virtio.c" "$stage/root/bin/virtio"
cc_user "$here/user/virtio-stress.c" "$stage/root/bin/virtio-stress"
cp /bin/busybox "$stage/root/bin/busybox"
for applet in $(/bin/busybox --list); do
	[[ $applet == busybox || -e $stage/root/bin/$applet ]] && continue
	ln -s busybox "$stage/root/bin/$applet"
done
install -m 0755 "$here/initramfs/init" "$stage/root/init"
# The kernel opens /dev/console for init before /init can mount devtmpfs.
if ! mknod -m 600 "$stage/root/dev/console" c 5 1 2>/dev/null; then
	die "mknod failed (build as root, or in a container that allows mknod)"
fi
(cd "$stage/root" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
	cpio --null -o -H newc --owner=0:0 --reproducible --quiet) >"$stage/initramfs.cpio"

# --- 8. publish ---------------------------------------------------------------
mkdir -p "$out.tmp"
cp "$obj/linux" "$out.tmp/linux"
mv "$stage/initramfs.cpio" "$out.tmp/initramfs.cpio"
cp "$obj/.config" "$out.tmp/kernel.config"
{
	echo "hash $hash"
	echo "linux-source-6.1 $ksrc_ver"
	echo "busybox-static $bb_ver"
	echo "built $(date -u +%FT%TZ) in $(($(date +%s) - t0)) s"
} >"$out.tmp/build-info.txt"
rm -rf "$out" "$stage"
mv "$out.tmp" "$out"
log "done in $(($(date +%s) - t0)) s"
finish

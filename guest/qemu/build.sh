#!/usr/bin/env bash
# Builds the virtio-ts QEMU guest: Debian's own x86_64 kernel (copied, not built)
# and an uncompressed newc initramfs with busybox-static, /init (guest/qemu/init)
# and the few kernel modules a virtio-pci guest needs (virtio-pci, virtio-blk,
# virtio-rng, ext4), with their dependencies and a depmod index.
#
#   guest/qemu/build.sh               build (or reuse) and print the paths
#   VT_BUILD_DIR=/x build.sh          put build/ somewhere else (default: <repo>/build)
#   VT_QEMU_KERNEL=<release> build.sh use /boot/vmlinuz-<release> (default: the one
#                                     linux-image-amd64 depends on)
#
# Outputs (cached by a hash over the inputs and the package versions):
#   build/qemu/<hash>/vmlinuz          the kernel (Debian's bzImage)
#   build/qemu/<hash>/vmlinux          the same kernel uncompressed (ELF, booted via PVH;
#                                      absent when it cannot be extracted)
#   build/qemu/<hash>/initramfs.cpio
#   build/qemu/current -> <hash>       stable pointer to the latest build
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out_root=${VT_BUILD_DIR:-$repo/build}/qemu
t0=$(date +%s)

log() { printf 'build.sh: %s\n' "$*" >&2; }
die() { printf 'build.sh: ERROR: %s\n' "$*" >&2; exit 1; }

# --- 1. host prerequisites ---------------------------------------------------
# What the build needs; running the guest also needs qemu-system-x86 (and the
# tests qemu-utils for qemu-storage-daemon).
pkgs=(linux-image-amd64 busybox-static cpio kmod)
missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
if ((${#missing[@]})); then
	die "missing Debian packages: ${missing[*]}
  install them with:  apt-get install -y ${pkgs[*]} qemu-system-x86 qemu-utils"
fi
for p in qemu-system-x86 qemu-utils; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
		log "note: $p is not installed; running the guest needs it (apt-get install -y $p)"
done
[[ -x /bin/busybox ]] || die "/bin/busybox not found (apt-get install -y busybox-static)"
! LC_ALL=C ldd /bin/busybox >/dev/null 2>&1 ||
	die "/bin/busybox is not static: install busybox-static (apt-get install -y busybox-static)"

if [[ -n ${VT_QEMU_KERNEL:-} ]]; then
	kver=$VT_QEMU_KERNEL
else
	# linux-image-amd64 (the meta package) depends on linux-image-<release>.
	kver=$(dpkg-query -W -f='${Depends}' linux-image-amd64 | tr ',' '\n' |
		sed -n 's/^ *linux-image-\([0-9][^ ]*\).*/\1/p' | head -n1)
	[[ -n $kver ]] || die "cannot tell the kernel release from linux-image-amd64's dependencies (set VT_QEMU_KERNEL)"
fi
vmlinuz=/boot/vmlinuz-$kver
moddir=/lib/modules/$kver
[[ -r $vmlinuz ]] || die "$vmlinuz not found or not readable (apt-get install --reinstall -y linux-image-$kver)"
[[ -f $moddir/modules.builtin ]] || die "$moddir/modules.builtin not found (apt-get install --reinstall -y linux-image-$kver)"
kpkg_ver=$(dpkg-query -W -f='${Version}' "linux-image-$kver" 2>/dev/null) ||
	die "package linux-image-$kver is not installed"
bb_ver=$(dpkg-query -W -f='${Version}' busybox-static)

# --- 2. cache key ------------------------------------------------------------
inputs=(build.sh init)
hash=$(
	for f in "${inputs[@]}"; do
		printf '== %s\n' "$f"
		cat "$here/$f"
	done
	printf 'linux-image-%s %s\nbusybox-static %s\n' "$kver" "$kpkg_ver" "$bb_ver"
) || die "cannot read build inputs"
hash=$(printf '%s' "$hash" | sha256sum | cut -c1-16)
out=$out_root/$hash

finish() {
	ln -sfn "$hash" "$out_root/current"
	echo "kernel:    $out/vmlinuz"
	if [[ -f $out/vmlinux ]]; then echo "vmlinux:   $out/vmlinux"; fi
	echo "initramfs: $out/initramfs.cpio"
	echo "current:   $out_root/current -> $hash"
}

if [[ -f $out/vmlinuz && -f $out/initramfs.cpio ]]; then
	log "up to date ($hash)"
	finish
	exit 0
fi

mkdir -p "$out_root"
exec 9>"$out_root/.lock"
flock 9
if [[ -f $out/vmlinuz && -f $out/initramfs.cpio ]]; then
	finish
	exit 0
fi

# --- 3. staging tree: busybox, /init ------------------------------------------
stage=$out_root/.stage-$hash
root=$stage/root
rm -rf "$stage"
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,root,etc,mnt,lib/modules/"$kver"}
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
	[[ $applet == busybox ]] && continue
	ln -s busybox "$root/bin/$applet"
done
# The kernel runs /sbin/modprobe for request_module() (e.g. mount -t ext4).
ln -s ../bin/busybox "$root/sbin/modprobe"
install -m 0755 "$here/init" "$root/init"
# The kernel opens /dev/console for init before /init can mount devtmpfs;
# without the node /init reopens its output on devtmpfs's console.
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null ||
	log "note: mknod failed (not root?): no /dev/console in the initramfs; /init reopens it"

# --- 4. kernel modules, with every dependency ---------------------------------
wanted=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
	virtio-rng virtio_blk crc32c_generic crc16 mbcache jbd2 ext4)
declare -A seen=()
add_module() { # name
	local name=${1//-/_} file deps dep
	[[ -n ${seen[$name]:-} ]] && return 0
	seen[$name]=1
	file=$(modinfo -k "$kver" -F filename "$name" 2>/dev/null) || die "module $name not found for $kver"
	if [[ $file == "(builtin)" ]]; then
		return 0
	fi
	[[ $file == "$moddir"/* ]] || die "module $name: unexpected path $file"
	mkdir -p "$root$(dirname "$file")"
	cp "$file" "$root$file"
	deps=$(modinfo -k "$kver" -F depends "$name")
	for dep in ${deps//,/ }; do
		add_module "$dep"
	done
}
for m in "${wanted[@]}"; do
	add_module "$m"
done
for f in modules.builtin modules.builtin.modinfo; do
	[[ -f $moddir/$f ]] && cp "$moddir/$f" "$root$moddir/$f"
done
# modules.order, cut down to the staged modules (the full one is 160 KB)
if [[ -f $moddir/modules.order ]]; then
	while IFS= read -r line; do
		if [[ -f $root$moddir/$line ]]; then printf '%s\n' "$line"; fi
	done <"$moddir/modules.order" >"$root$moddir/modules.order"
fi
depmod -b "$root" "$kver" || die "depmod failed"
nmods=$(find "$root$moddir" -name '*.ko*' | wc -l)
log "kernel $kver ($kpkg_ver): $nmods modules staged"

# --- 5. the initramfs (uncompressed: QEMU loads it faster than the guest inflates gzip) ---
(cd "$root" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
	cpio --null -o -H newc --owner=0:0 --reproducible --quiet) >"$stage/initramfs.cpio"

# --- 6. the uncompressed kernel, for a PVH boot ------------------------------
# QEMU boots an ELF vmlinux with a PVH entry note directly (no firmware real
# mode, no in-guest decompression of the 8 MB bzImage: about 4 s less under
# TCG). The bzImage's setup header says where its compressed payload is
# (payload_offset at 0x248, payload_length at 0x24c, relative to the protected
# mode part after (setup_sects + 1) * 512 bytes); the payload's last 4 bytes
# are the uncompressed size. Optional: without it the launcher boots vmlinuz.
u32() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '; }
extract_vmlinux() { # bzImage out
	local img=$1 dst=$2 setup off len start magic want got
	grep -qx 'CONFIG_PVH=y' "/boot/config-$kver" 2>/dev/null || { log "note: no CONFIG_PVH=y in /boot/config-$kver"; return 1; }
	[[ $(od -An -c -j $((0x202)) -N4 "$img" | tr -d ' ') == HdrS ]] || { log "note: $img has no bzImage header"; return 1; }
	setup=$(od -An -tu1 -j $((0x1f1)) -N1 "$img" | tr -d ' ')
	((setup)) || setup=4
	off=$(u32 "$img" $((0x248)))
	len=$(u32 "$img" $((0x24c)))
	start=$(((setup + 1) * 512 + off))
	magic=$(od -An -tx1 -j "$start" -N6 "$img" | tr -d ' ')
	local -a dec
	local pymod=
	case $magic in
	fd377a585a00) dec=(xz -dc) pymod=lzma ;;
	1f8b*) dec=(gzip -dc) pymod=gzip ;;
	28b52ffd*) dec=(zstd -dcq) ;;
	*) log "note: unknown kernel payload compression (magic $magic)"; return 1 ;;
	esac
	if ! command -v "${dec[0]}" >/dev/null; then
		# python3's standard library reads xz and gzip too
		if [[ -n $pymod ]] && command -v python3 >/dev/null; then
			dec=(python3 -c "import sys, $pymod; sys.stdout.buffer.write($pymod.decompress(sys.stdin.buffer.read()))")
		else
			log "note: ${dec[0]} not installed"
			return 1
		fi
	fi
	dd if="$img" bs=1M iflag=skip_bytes,count_bytes skip="$start" count=$((len - 4)) status=none | "${dec[@]}" >"$dst" ||
		{ log "note: decompressing the kernel payload failed"; return 1; }
	want=$(u32 "$img" $((start + len - 4)))
	got=$(stat -c %s "$dst")
	[[ $got == "$want" ]] || { log "note: vmlinux is $got bytes, the header says $want"; return 1; }
	[[ $(od -An -tx1 -N4 "$dst" | tr -d ' ') == 7f454c46 ]] || { log "note: the kernel payload is not an ELF file"; return 1; }
}

# --- 7. publish ---------------------------------------------------------------
mkdir -p "$out.tmp"
cp "$vmlinuz" "$out.tmp/vmlinuz"
if ! extract_vmlinux "$vmlinuz" "$out.tmp/vmlinux"; then
	rm -f "$out.tmp/vmlinux"
	log "booting will use the bzImage (slower under TCG)"
fi
mv "$stage/initramfs.cpio" "$out.tmp/initramfs.cpio"
(cd "$root$moddir" && find . -name '*.ko*' | LC_ALL=C sort) >"$out.tmp/modules.txt"
{
	echo "hash $hash"
	echo "kernel $kver"
	echo "linux-image-$kver $kpkg_ver"
	echo "busybox-static $bb_ver"
	echo "built $(date -u +%FT%TZ) in $(($(date +%s) - t0)) s"
} >"$out.tmp/build-info.txt"
rm -rf "$out" "$stage"
mv "$out.tmp" "$out"
log "done in $(($(date +%s) - t0)) s ($(du -k "$out/initramfs.cpio" | cut -f1) KiB initramfs)"
finish

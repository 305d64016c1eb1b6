#!/usr/bin/env bash
# Makes the system images the virtual machine's tests install, with the engines' own tools:
#
#   images.sh key DIR                                  signer.pem, signer.key (EC P-256, self-signed)
#   images.sh swu OUT VERSION SLOT PAYLOAD KEYDIR       a SWUpdate image for hardware 1.0 whose raw
#                                                       handler writes PAYLOAD into SLOT, its
#                                                       sw-description signed (CMS) by KEYDIR's key
#   images.sh rauc OUT VERSION COMPATIBLE PAYLOAD KEYDIR  a RAUC bundle (verity) of one raw image,
#                                                       made and signed by `rauc bundle`
#
# A .swu is a cpio archive in the "crc" format whose first entry is sw-description (then its
# signature, then the images), as SWUpdate reads it.
set -euo pipefail

key() {
    mkdir -p "$1"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -subj "/CN=dm test image signer" -keyout "$1/signer.key" -out "$1/signer.pem" 2>/dev/null
}

swu() {
    local out=$1 version=$2 slot=$3 payload=$4 keys=$5 work
    work=$(mktemp -d)
    cp "$payload" "$work/rootfs.img"
    cat > "$work/sw-description" <<EOF
software =
{
	version = "$version";
	hardware-compatibility: [ "1.0" ];
	images: (
		{
			filename = "rootfs.img";
			device = "$slot";
			type = "raw";
			sha256 = "$(sha256sum "$payload" | cut -d' ' -f1)";
		}
	);
}
EOF
    openssl cms -sign -in "$work/sw-description" -out "$work/sw-description.sig" \
        -signer "$keys/signer.pem" -inkey "$keys/signer.key" -outform DER -nosmimecap -binary
    (cd "$work" && printf 'sw-description\nsw-description.sig\nrootfs.img\n' \
        | cpio --quiet -o -H crc) > "$out"
    rm -rf "$work"
}

rauc_bundle() {
    local out=$1 version=$2 compatible=$3 payload=$4 keys=$5 work
    work=$(mktemp -d)
    mkdir "$work/content"
    cp "$payload" "$work/content/rootfs.img"
    printf '[update]\ncompatible=%s\nversion=%s\n[bundle]\nformat=verity\n[image.rootfs]\nfilename=rootfs.img\n' \
        "$compatible" "$version" > "$work/content/manifest.raucm"
    rm -f "$out"
    rauc bundle --cert="$keys/signer.pem" --key="$keys/signer.key" "$work/content" "$out" >/dev/null
    rm -rf "$work"
}

case ${1:-} in
    key) key "$2" ;;
    swu) swu "$2" "$3" "$4" "$5" "$6" ;;
    rauc) rauc_bundle "$2" "$3" "$4" "$5" "$6" ;;
    *) sed -n '2,13p' "$0" >&2; exit 2 ;;
esac

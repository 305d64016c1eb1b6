#!/bin/sh
# Debian repositories for the software update tests, made with Debian's own tools: packages
# built with dpkg-deb, indices and release files with apt-ftparchive, signed with gpg.
#
#   apt-repo.sh key KEYDIR                     a signing key: KEYDIR/gnupg, KEYDIR/keyring.gpg
#   apt-repo.sh deb REPO NAME VERSION ARCH [POSTINST [PREINST]]
#                                              REPO/pool/main/N/NAME/NAME_VERSION_ARCH.deb,
#                                              installing /usr/share/dm-test/NAME; POSTINST
#                                              and PREINST are the scripts' shell bodies
#   apt-repo.sh index REPO SUITE ARCHES KEYDIR [LABEL]
#                                              dists/SUITE/main/binary-A/Packages(.gz) for
#                                              each of ARCHES, Release, InRelease, Release.gpg
set -eu
cmd=$1; shift
case $cmd in
key)
    dir=$1
    mkdir -p "$dir/gnupg"
    chmod 700 "$dir/gnupg"
    gpg --homedir "$dir/gnupg" --batch --quiet --passphrase '' \
        --quick-gen-key 'dm test repository <repo@test.invalid>' ed25519 sign 0 2>/dev/null
    gpg --homedir "$dir/gnupg" --batch --quiet --export > "$dir/keyring.gpg"
    ;;
deb)
    repo=$1 name=$2 version=$3 arch=$4 postinst=${5:-} preinst=${6:-}
    build=$(mktemp -d)
    mkdir -p "$build/DEBIAN" "$build/usr/share/dm-test"
    echo "$name $version" > "$build/usr/share/dm-test/$name"
    cat > "$build/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: $arch
Maintainer: dm tests <tests@test.invalid>
Section: admin
Priority: optional
Description: a package of the dm software update tests
CONTROL
    if [ -n "$postinst" ]; then
        printf '#!/bin/sh\nset -e\n%s\n' "$postinst" > "$build/DEBIAN/postinst"
        chmod 755 "$build/DEBIAN/postinst"
    fi
    if [ -n "$preinst" ]; then
        printf '#!/bin/sh\nset -e\n%s\n' "$preinst" > "$build/DEBIAN/preinst"
        chmod 755 "$build/DEBIAN/preinst"
    fi
    first=$(printf %.1s "$name")
    mkdir -p "$repo/pool/main/$first/$name"
    dpkg-deb --root-owner-group -Zgzip --build "$build" \
        "$repo/pool/main/$first/$name/${name}_${version}_${arch}.deb" >/dev/null
    rm -rf "$build"
    ;;
index)
    repo=$1 suite=$2 arches=$3 key=$(cd "$4" && pwd) label=${5:-dm-test}
    cd "$repo"
    for a in $arches; do
        mkdir -p "dists/$suite/main/binary-$a"
        apt-ftparchive --arch "$a" packages pool/main > "dists/$suite/main/binary-$a/Packages"
        gzip -9nkf "dists/$suite/main/binary-$a/Packages"
    done
    cd "dists/$suite"
    rm -f Release InRelease Release.gpg
    apt-ftparchive -o APT::FTPArchive::Release::Origin=dm-test \
        -o APT::FTPArchive::Release::Label="$label" -o APT::FTPArchive::Release::Suite="$suite" \
        -o APT::FTPArchive::Release::Codename="$suite" \
        -o APT::FTPArchive::Release::Architectures="$arches" \
        -o APT::FTPArchive::Release::Components=main release . > Release.new
    mv Release.new Release
    gpg --homedir "$key/gnupg" --batch --quiet --yes --clearsign -o InRelease Release
    gpg --homedir "$key/gnupg" --batch --quiet --yes -abs -o Release.gpg Release
    ;;
*)
    echo "apt-repo.sh: unknown command $cmd" >&2
    exit 2
    ;;
esac

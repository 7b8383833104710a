#!/bin/sh
# Unpack Debian 13 (trixie)'s skopeo into DIR without installing anything, and write DIR/skopeo, a
# wrapper that runs it through trixie's own loader and libraries.
#
# Why: Debian 12's skopeo is built with sigstore disabled, so it can neither sign with a sigstore key
# nor check a `sigstoreSigned` policy; the signature tests need one that can. apt reads a private
# sources list, lists and archive directory under DIR, so the system's apt state is left untouched
# (no root needed beyond what apt-get download needs).
#
# Usage: scripts/trixie-skopeo.sh DIR        (DIR/skopeo exists afterwards, or the script failed)
set -eu

dest=$1
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# skopeo and the libraries it links in trixie (`apt-cache depends skopeo`, then gpgme's), with the
# C library and its loader. Its configuration (containers-common) is not needed: tests pass their own.
packages="skopeo libc6 libgpgme11t64 libassuan9 libgpg-error0 libsqlite3-0"

mkdir -p "$dest"
work=$(mktemp -d "$dest/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial" "$work/root"
cat > "$work/sources.list" <<EOF
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main
EOF

apt_private() {
    command=$1
    shift
    "$command" -q -o Dir::Etc::sourcelist="$work/sources.list" -o Dir::Etc::sourceparts=- \
        -o Dir::State::Lists="$work/lists" -o Dir::Cache::Archives="$work/archives" \
        -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o Debug::NoLocking=1 \
        -o APT::Sandbox::User=root "$@"
}

apt_private apt-get update >&2
(cd "$work/archives" && apt_private apt-get download $packages >&2)
for deb in "$work"/archives/*.deb; do
    dpkg-deb -x "$deb" "$work/root"
done

libs="$work/root/usr/lib/x86_64-linux-gnu:$work/root/lib/x86_64-linux-gnu"
loader="$work/root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
[ -x "$loader" ] || loader="$work/root/lib64/ld-linux-x86-64.so.2"
# Every library skopeo needs must come from trixie: one the loader finds elsewhere (the system's, or
# none) is missing from the list above.
foreign=$("$loader" --inhibit-cache --library-path "$libs" --list "$work/root/usr/bin/skopeo" \
    | grep "=>" | grep -v "=> $work/root/" || true)
if [ -n "$foreign" ]; then
    echo "trixie-skopeo: libraries not from trixie:" >&2
    echo "$foreign" >&2
    exit 1
fi

rm -rf "$dest/root"
mv "$work/root" "$dest/root"
loader=$(echo "$loader" | sed "s|$work/root|$dest/root|")
cat > "$dest/skopeo.tmp" <<EOF
#!/bin/sh
exec "$loader" --library-path "$dest/root/usr/lib/x86_64-linux-gnu:$dest/root/lib/x86_64-linux-gnu" \
    "$dest/root/usr/bin/skopeo" "\$@"
EOF
chmod 755 "$dest/skopeo.tmp"
"$dest/skopeo.tmp" --version >&2
mv "$dest/skopeo.tmp" "$dest/skopeo"

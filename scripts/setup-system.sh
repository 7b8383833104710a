#!/usr/bin/env bash
# Installs the Debian packages and the Python environment imagebuild and its
# tests need. Idempotent: a second run only checks, and costs seconds.
# Recommended packages come too: that is the configuration the tests were
# proven on (skopeo, mmdebstrap and docker.io lean on some of them).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(git make python3-venv docker.io docker-registry skopeo umoci oci-image-tool
          mmdebstrap openssh-server busybox-static apache2-utils qemu-system-x86 iproute2 curl ca-certificates
          default-jdk-headless zstd file nginx postgresql
          genext2fs dosfstools mtools syslinux syslinux-common fdisk qemu-utils ovmf
          qemu-user-static binfmt-support)

missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# npm installs a Node app's libraries; a nodejs from elsewhere (NodeSource) brings its own npm,
# and Debian's npm package would conflict with it, so ask for the command, not the package.
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing Debian packages: ${missing[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >&2
fi

# arm64 images: mmdebstrap runs the arm64 packages' maintainer scripts, and the tests the arm64
# python3, through qemu-user-static, which the kernel finds by its binfmt_misc registration.
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    [ -e /proc/sys/fs/binfmt_misc/register ] || \
        $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || true
    $SUDO update-binfmts --enable qemu-aarch64 || echo "warning: could not register qemu-aarch64 with binfmt_misc; arm64 images cannot be built here" >&2
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    echo "installing imagebuild into .venv" >&2
    .venv/bin/pip install -q --upgrade pip setuptools > .venv/install.log 2>&1 || { cat .venv/install.log >&2; exit 1; }
    .venv/bin/pip install -q -e '.[test]' >> .venv/install.log 2>&1 || { cat .venv/install.log >&2; exit 1; }
    rm -f .venv/.installed-*
    touch "$stamp"
fi

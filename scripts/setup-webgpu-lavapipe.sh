#!/usr/bin/env bash
# Installs Mesa 25 (lavapipe, a Vulkan driver that runs on the CPU) from bookworm-backports so that Dawn's
# Node bindings find a Vulkan adapter ("llvmpipe") on a GPU-less Debian bookworm machine.
# Debian bookworm's own Mesa (22.x) is too old for Dawn. Idempotent; needs root (CI runs as root).
set -euo pipefail
if ldconfig -p 2>/dev/null | grep -q libvulkan.so.1 && ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 \
   && dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | grep -q '^25'; then
  echo "lavapipe already installed: mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"
  exit 0
fi
. /etc/os-release
if [ "${VERSION_CODENAME:-}" != bookworm ]; then
  echo "setup-webgpu-lavapipe: this script targets Debian bookworm (found ${PRETTY_NAME:-unknown})." >&2
  echo "Install Mesa >= 25 (mesa-vulkan-drivers, libvulkan1) with your distribution's tools." >&2
  exit 1
fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo "deb http://deb.debian.org/debian bookworm-backports main" | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
echo "installed mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"

#!/usr/bin/env bash
# Installs the system packages colwgpu needs on a fresh Debian/Ubuntu machine:
# a Vulkan loader and Mesa's software Vulkan driver (lavapipe), preferring the
# bookworm-backports build (2-4x faster for compute) when that suite exists.
set -euo pipefail
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

if dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 && dpkg -s libvulkan1 >/dev/null 2>&1; then
  echo "install-system: mesa-vulkan-drivers already installed ($(dpkg-query -W -f='${Version}' mesa-vulkan-drivers))"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
codename=""
[ -r /etc/os-release ] && codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
if [ "$codename" = "bookworm" ] && [ ! -e /etc/apt/sources.list.d/colwgpu-backports.sources ]; then
  # Same mirror and keyring as the main Debian source.
  uri=$(grep -h -m1 '^URIs:' /etc/apt/sources.list.d/debian.sources 2>/dev/null | awk '{print $2}')
  [ -n "$uri" ] || uri="http://deb.debian.org/debian"
  $SUDO tee /etc/apt/sources.list.d/colwgpu-backports.sources >/dev/null <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
$SUDO apt-get update -qq || true
if [ "$codename" = "bookworm" ] && \
   $SUDO apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1; then
  echo "install-system: installed mesa-vulkan-drivers from bookworm-backports"
else
  $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
  echo "install-system: installed the distribution's mesa-vulkan-drivers"
fi

#!/usr/bin/env bash
# Install what shoal needs on a fresh Debian machine: system packages, then a venv.
# Usage: scripts/bootstrap.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=()
python3 -c "import ensurepip, venv" 2>/dev/null || apt_packages+=(python3-venv)
[[ "${1:-}" == "--dev" ]] && apt_packages+=(aria2 transmission-cli qbittorrent-nox redis-server nginx-light curl iproute2 procps openssl skopeo docker-registry containerd)
missing=()
for p in "${apt_packages[@]+"${apt_packages[@]}"}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo_cmd=""
  [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
    || { $sudo_cmd apt-get update -q >/dev/null && $sudo_cmd apt-get install -y -q "${missing[@]}" >/dev/null; }
fi

if [[ ! -x .venv/bin/python ]]; then
  echo "bootstrap: creating .venv" >&2
  python3 -m venv .venv
fi
extra=""
[[ "${1:-}" == "--dev" ]] && extra="[dev]"
stamp=".venv/.shoal-installed${extra}"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
  echo "bootstrap: installing shoal${extra} into .venv" >&2
  .venv/bin/pip install -q --disable-pip-version-check -e ".${extra}" 2>&1 | grep -v '^WARNING: Location' >&2 || true
  .venv/bin/python -c "import shoal, libtorrent" && touch "$stamp"
fi

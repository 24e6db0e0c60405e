#!/usr/bin/env bash
# The voices and tools for generating end-of-turn training data (training/turn/README.md).
# Not run by CI. Needs the project venv (scripts/setup.sh) and root for apt.
set -euo pipefail
cd "$(dirname "$0")/../.."

apt_packages=(flite libflite1 festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
              espeak-ng)
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
.venv/bin/python -m pip install --disable-pip-version-check -q -e ".[train]"

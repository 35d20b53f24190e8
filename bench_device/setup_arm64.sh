#!/usr/bin/env bash
# setup_arm64.sh - build an emulated arm64 (aarch64) Linux device on an x86_64 Debian host.
#
# No ARM board?  This script gives you an arm64 Python 3.11 that runs under
# qemu user-mode emulation, with arm64 builds of numpy, onnxruntime and
# ai-edge-litert (optionally the ExecuTorch runtime), so that edgeconv can
# deploy to and benchmark on "an arm64 device" from any x86_64 Debian machine.
#
# What it does (each step is skipped when it is already done):
#   1. qemu     Downloads qemu from Debian 13 "trixie" (the `qemu-user` package,
#               whose binaries are static) and extracts only the statically
#               linked `qemu-aarch64` binary.  The version must be >= 10:
#               Debian 12's qemu 7.2 crashes while importing onnxruntime.
#   2. sysroot  Downloads the arm64 .debs of python3.11 and the libraries it and
#               the wheels need from Debian 12 "bookworm" (dependencies resolved
#               by apt) and unpacks them into a directory tree (the "sysroot").
#   3. wheels   Uses the host's pip to download arm64 (manylinux aarch64,
#               CPython 3.11) wheels from PyPI and installs them into the
#               sysroot's /usr/local/lib/python3.11/dist-packages.
#   4. executorch (only with --with-executorch) Installs executorch plus the
#               arm64 torch build it links against into a separate layer.
#   5. wrapper  Writes <cache>/arm64/bin/python3: a small shell script that
#               runs the arm64 Python under qemu; call it like `python3`.
#   6. check    Runs bench_device/selftest.py on the emulated device: a tiny
#               Conv model through the agent's own runtime adapters
#               (onnxruntime and LiteRT, and ExecuTorch if installed).
#
# Nothing on the host is installed or changed (apart from pip's own download
# cache): apt is run with private configuration, lists and cache directories
# inside the cache (the host's sources, package lists and installed packages
# are not touched), and binfmt_misc is not used.  Root is not required.
# Network access is needed only to the Debian mirror and PyPI.
#
# Everything lives in <cache>/arm64/, <cache> being $EDGECONV_CACHE, else the
# checkout's .cache, else (an installed edgeconv) ~/.cache/edgeconv:
#   qemu/qemu-aarch64     the emulator (static x86_64 binary)
#   sysroot/              Debian 12 arm64 root: /usr/bin/python3.11, libs,
#                         /usr/local/lib/python3.11/dist-packages (the wheels)
#   executorch-site/      optional ExecuTorch + torch layer
#   bin/python3           wrapper (also bin/python3.11, bin/python)
#   bin/qemu-aarch64      symlink to the emulator
#
# Usage:
#   bench_device/setup_arm64.sh [--with-executorch] [--no-check] [--check] [--force]
#
#   --with-executorch  also install the ExecuTorch runtime.  Its Python
#                      bindings link against torch, and the arm64 torch wheel
#                      on PyPI is a CUDA build whose libraries must load, so
#                      this brings ~2.7 GB of downloads (~4 GB on disk), and
#                      `import torch, executorch.runtime` takes ~35 s under
#                      emulation.  Once installed the layer is kept by later
#                      runs; delete <cache>/arm64/executorch-site to remove it.
#   --no-check         skip the smoke test at the end.
#   --check            only run the smoke test (the device must be set up).
#   --force            delete <cache>/arm64 and build everything again.
#
# Environment:
#   EDGECONV_CACHE                  cache root (see above)
#   EDGECONV_ARM64_PACKAGES         pip requirements for the device
#                                   (default: the pins of requirements.txt)
#   EDGECONV_ARM64_EXECUTORCH=1     same as --with-executorch
#   EDGECONV_ARM64_EXECUTORCH_PACKAGES  (default: "executorch==1.5.1 torch==2.13.0")
#   EDGECONV_DEBIAN_MIRROR          (default: http://deb.debian.org/debian)
#   EDGECONV_DEBIAN_SECURITY_MIRROR (default: http://deb.debian.org/debian-security)
#   PYTHON                          host Python with pip (default: python3)
#
# Using the device afterwards:
#   <cache>/arm64/bin/python3 -c 'import platform; print(platform.machine())'   # aarch64
# The wrapper honours QEMU_CPU (emulated core, default cortex-a76; list them
# with `<cache>/arm64/bin/qemu-aarch64 -cpu help`) and EDGECONV_ARM64_PYTHONPATH
# (PYTHONPATH inside the device; the host's PYTHONPATH is not passed on).
# Without binfmt_misc, programs that the device's Python starts (subprocess,
# os.system) run natively on the host, except sys.executable, which is set to
# the wrapper so that `sys.executable -c ...` and multiprocessing's "spawn"
# start the emulated Python again.  /proc/cpuinfo shows the emulated core;
# os.cpu_count() is the host's; ru_maxrss includes the emulator's own memory.

set -euo pipefail

# --------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd -P)

# The same rule as edgeconv.device.qemu.cache_dir: a source checkout keeps it in .cache,
# an installed edgeconv in ~/.cache/edgeconv.
if [ -f "$REPO_ROOT/pyproject.toml" ]; then
    DEFAULT_CACHE=$REPO_ROOT/.cache
else
    DEFAULT_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/edgeconv
fi
CACHE_ROOT=${EDGECONV_CACHE:-$DEFAULT_CACHE}
mkdir -p "$CACHE_ROOT"
CACHE_ROOT=$(cd "$CACHE_ROOT" && pwd -P)
ARM=$CACHE_ROOT/arm64

QEMU_DIR=$ARM/qemu
QEMU=$QEMU_DIR/qemu-aarch64
SYSROOT=$ARM/sysroot
SITE=$SYSROOT/usr/local/lib/python3.11/dist-packages
ET_SITE=$ARM/executorch-site
BIN=$ARM/bin
WRAPPER=$BIN/python3
STAMPS=$ARM/stamps
APT_DIR=$ARM/apt
WHEELS=$ARM/wheels

DEBIAN_MIRROR=${EDGECONV_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${EDGECONV_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
DEBIAN_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

# Suite that provides a qemu >= 10 with static binaries, and the package names
# to look in (in order) for a static qemu-aarch64.
QEMU_SUITE=trixie
QEMU_PACKAGES="qemu-user qemu-user-static"
QEMU_MIN_MAJOR=10

# Debian 12 arm64 packages for the sysroot (apt adds their dependencies).
# python3.11 brings libc6, libssl3, zlib1g, libexpat1, libffi8, libbz2, liblzma,
# libsqlite3, ...; libstdc++6/libgcc-s1/libgomp1 are needed by the C++ wheels.
SYSROOT_SUITE=bookworm
SYSROOT_PACKAGES="python3.11 libstdc++6 libgcc-s1 libgomp1"
SYSROOT_GLIBC_MINOR=36   # bookworm has glibc 2.36: wheels up to manylinux_2_36

# The device's packages: the one version list, requirements.txt beside this script.
ARM64_PACKAGES=${EDGECONV_ARM64_PACKAGES:-$(sed -e 's/#.*//' "$SCRIPT_DIR/requirements.txt" | xargs)}
EXECUTORCH_PACKAGES=${EDGECONV_ARM64_EXECUTORCH_PACKAGES:-executorch==1.5.1 torch==2.13.0}
# Pure-Python modules that executorch's runtime imports (installed without
# executorch's full dependency list, which is for exporting models on a host).
EXECUTORCH_RUNTIME_EXTRAS="ruamel.yaml pyyaml tabulate"

HOST_PYTHON=${PYTHON:-python3}
DEFAULT_QEMU_CPU=cortex-a76

WITH_EXECUTORCH=${EDGECONV_ARM64_EXECUTORCH:-0}
RUN_CHECK=1
CHECK_ONLY=0
FORCE=0

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; }

for arg in "$@"; do
    case $arg in
        --with-executorch) WITH_EXECUTORCH=1 ;;
        --no-check) RUN_CHECK=0 ;;
        --check) CHECK_ONLY=1 ;;
        --force) FORCE=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $arg (see --help)" >&2; exit 2 ;;
    esac
done
[ "$WITH_EXECUTORCH" = 1 ] || WITH_EXECUTORCH=0

# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------
T_START=$(date +%s)
log() { printf '[arm64 %4ss] %s\n' "$(( $(date +%s) - T_START ))" "$*" >&2; }
die() { printf 'setup_arm64: error: %s\n' "$*" >&2; exit 1; }

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found; $2"; }

# A stamp records the settings a step was completed with; a step is redone
# when its stamp is missing or was written with different settings.
stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp_set() { mkdir -p "$STAMPS"; printf '%s' "$2" > "$STAMPS/$1"; }
stamp_clear() { rm -f "$STAMPS/$1"; }

# pip platform tags for the sysroot's glibc: manylinux2014 and 2_17..2_36.
PIP_PLATFORMS=(--platform manylinux2014_aarch64)
for ((minor = 17; minor <= SYSROOT_GLIBC_MINOR; minor++)); do
    PIP_PLATFORMS+=(--platform "manylinux_2_${minor}_aarch64")
done
PIP_TARGET_ARGS=(--only-binary=:all: --python-version 3.11 --implementation cp
                 --abi cp311 --abi abi3 --abi none "${PIP_PLATFORMS[@]}")

host_pip() {
    PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
        "$HOST_PYTHON" -m pip "$@"
}

host_is_py311() {
    "$HOST_PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null
}

# private_apt DIR ARCH SOURCES... : prepare an apt instance that is isolated
# from the host's apt (own config, sources, lists, cache and an empty dpkg
# status) and print the path of its config file (use it as APT_CONFIG).
private_apt() {
    local dir=$1 arch=$2; shift 2
    mkdir -p "$dir/etc/apt.conf.d" "$dir/etc/sources.list.d" "$dir/etc/preferences.d" \
             "$dir/etc/trusted.gpg.d" "$dir/state/lists/partial" \
             "$dir/cache/archives/partial" "$dir/log"
    : > "$dir/state/status"
    printf '%s\n' "$@" > "$dir/etc/sources.list"
    {
        echo "Dir::Etc::Main \"/dev/null\";"
        echo "Dir::Etc::Parts \"$dir/etc/apt.conf.d\";"
        echo "Dir::Etc::SourceList \"$dir/etc/sources.list\";"
        echo "Dir::Etc::SourceParts \"$dir/etc/sources.list.d\";"
        echo "Dir::Etc::Preferences \"$dir/etc/preferences\";"
        echo "Dir::Etc::PreferencesParts \"$dir/etc/preferences.d\";"
        echo "Dir::Etc::TrustedParts \"$dir/etc/trusted.gpg.d\";"
        echo "Dir::State \"$dir/state\";"
        echo "Dir::State::status \"$dir/state/status\";"
        echo "Dir::Cache \"$dir/cache\";"
        echo "Dir::Log \"$dir/log\";"
        echo "APT::Architecture \"$arch\";"
        echo "APT::Architectures { \"$arch\"; };"
        echo "APT::Install-Recommends \"false\";"
        echo "APT::Install-Suggests \"false\";"
        echo "Acquire::Languages \"none\";"
        echo "Debug::NoLocking \"true\";"
        # apt as root drops to the _apt user for downloads, which cannot write
        # into a root-owned cache; download as the current user instead.
        [ "$(id -u)" = 0 ] && echo "APT::Sandbox::User \"root\";"
        # Keep the host's proxy settings, if any.
        local key val
        for key in Acquire::http::Proxy Acquire::https::Proxy; do
            val=$(apt-config dump "$key" 2>/dev/null | sed -n "s/^$key \"\(.*\)\";$/\1/p" | head -n1)
            [ -n "$val" ] && echo "$key \"$val\";"
        done
        true
    } > "$dir/apt.conf"
    echo "$dir/apt.conf"
}

# qemu_version BINARY: print "MAJOR.MINOR.PATCH" or nothing.
qemu_version() {
    "$1" --version 2>/dev/null | sed -n 's/^qemu-aarch64 version \([0-9][0-9.]*\).*/\1/p' | head -n1
}

# extract_deb DEB DEST: unpack a .deb's files, keeping DEST's merged-/usr
# symlinks (/lib -> usr/lib, ...) instead of replacing them with directories.
extract_deb() {
    dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" --keep-directory-symlink --no-same-owner
}

# --------------------------------------------------------------------------
# Step 1: qemu-aarch64 >= 10 from Debian trixie
# --------------------------------------------------------------------------
setup_qemu() {
    local ver
    ver=""
    if [ -x "$QEMU" ]; then ver=$(qemu_version "$QEMU"); fi
    if [ -n "$ver" ] && [ "${ver%%.*}" -ge "$QEMU_MIN_MAJOR" ]; then
        log "qemu: $QEMU (version $ver) - already there"
        return
    fi
    log "qemu: fetching a static qemu-aarch64 from Debian $QEMU_SUITE"
    local dir=$APT_DIR/$QEMU_SUITE-amd64 conf
    conf=$(private_apt "$dir" amd64 \
        "deb [signed-by=$DEBIAN_KEYRING] $DEBIAN_MIRROR $QEMU_SUITE main" \
        "deb [signed-by=$DEBIAN_KEYRING] $DEBIAN_SECURITY_MIRROR $QEMU_SUITE-security main")
    APT_CONFIG=$conf apt-get -qq update >&2 || die "apt-get update for $QEMU_SUITE failed"

    local dl=$dir/download pkg deb member found=""
    rm -rf "$dl"; mkdir -p "$dl"
    for pkg in $QEMU_PACKAGES; do
        (cd "$dl" && APT_CONFIG=$conf apt-get -qq download "$pkg" >&2) || continue
        deb=$(find "$dl" -maxdepth 1 -name "${pkg}_*.deb" | head -n1)
        [ -n "$deb" ] || continue
        for member in ./usr/bin/qemu-aarch64 ./usr/bin/qemu-aarch64-static; do
            mkdir -p "$QEMU_DIR"
            if dpkg-deb --fsys-tarfile "$deb" | tar -x -O "$member" > "$QEMU.tmp" 2>/dev/null \
                    && [ -s "$QEMU.tmp" ]; then
                chmod 755 "$QEMU.tmp"
                ver=$(qemu_version "$QEMU.tmp")
                if [ -n "$ver" ] && [ "${ver%%.*}" -ge "$QEMU_MIN_MAJOR" ]; then
                    mv -f "$QEMU.tmp" "$QEMU"
                    found="$pkg $(basename "$deb")"
                    break 2
                fi
                rm -f "$QEMU.tmp"
            fi
        done
    done
    rm -rf "$dl" "$dir/state/lists" "$dir/cache" "$QEMU.tmp"   # the binary is all we keep
    [ -n "$found" ] || die "no static qemu-aarch64 >= $QEMU_MIN_MAJOR found in Debian $QEMU_SUITE ($QEMU_PACKAGES)"
    log "qemu: $QEMU (version $ver, from $found)"
}

# --------------------------------------------------------------------------
# Step 2: Debian bookworm arm64 sysroot with python3.11
# --------------------------------------------------------------------------
setup_sysroot() {
    local key="$SYSROOT_SUITE arm64: $SYSROOT_PACKAGES"
    if stamp_ok sysroot "$key" && [ -x "$SYSROOT/usr/bin/python3.11" ]; then
        log "sysroot: $SYSROOT - already there"
        return
    fi
    stamp_clear sysroot; stamp_clear wheels
    log "sysroot: resolving and downloading Debian $SYSROOT_SUITE arm64 packages: $SYSROOT_PACKAGES"
    local dir=$APT_DIR/$SYSROOT_SUITE-arm64 conf
    conf=$(private_apt "$dir" arm64 \
        "deb [signed-by=$DEBIAN_KEYRING] $DEBIAN_MIRROR $SYSROOT_SUITE main" \
        "deb [signed-by=$DEBIAN_KEYRING] $DEBIAN_MIRROR $SYSROOT_SUITE-updates main" \
        "deb [signed-by=$DEBIAN_KEYRING] $DEBIAN_SECURITY_MIRROR $SYSROOT_SUITE-security main")
    APT_CONFIG=$conf apt-get -qq update >&2 || die "apt-get update for $SYSROOT_SUITE arm64 failed"
    rm -f "$dir"/cache/archives/*.deb
    # With an empty dpkg status, "install --download-only" fetches the
    # packages together with their whole dependency closure.
    # shellcheck disable=SC2086
    APT_CONFIG=$conf apt-get -qq -y --download-only install $SYSROOT_PACKAGES >&2 \
        || die "could not download the arm64 packages"

    local tmp=$SYSROOT.tmp deb n=0
    rm -rf "$tmp"
    mkdir -p "$tmp/usr/bin" "$tmp/usr/sbin" "$tmp/usr/lib"
    # Merged /usr, as on an installed Debian 12 system.
    ln -s usr/bin "$tmp/bin"; ln -s usr/sbin "$tmp/sbin"; ln -s usr/lib "$tmp/lib"
    for deb in "$dir"/cache/archives/*.deb; do
        extract_deb "$deb" "$tmp"; n=$((n + 1))
    done
    log "sysroot: unpacked $n packages"
    # Absolute symlinks (e.g. /usr/lib/python3.11/sitecustomize.py ->
    # /etc/python3.11/...) would point into the host when the sysroot is
    # reached by its host path; make them relative to the sysroot.
    local link target
    while IFS= read -r -d '' link; do
        target=$(readlink "$link")
        ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$tmp$target")" "$link"
    done < <(find "$tmp" -type l -lname '/*' -print0)
    mkdir -p "$tmp/usr/local/lib/python3.11/dist-packages"

    rm -rf "$SYSROOT"; mv "$tmp" "$SYSROOT"
    rm -rf "$dir/state/lists" "$dir/cache"   # downloaded lists and .debs are no longer needed
    stamp_set sysroot "$key"
    log "sysroot: $SYSROOT ($(du -sh "$SYSROOT" | cut -f1))"
}

# Byte-compile the standard library once, so that imports under emulation do
# not compile it again (and do not need to write into the sysroot).
compile_stdlib() {
    if stamp_ok stdlib-pyc "$(cat "$STAMPS/sysroot")"; then return; fi
    log "sysroot: byte-compiling the standard library"
    if host_is_py311; then
        # Same bytecode format as the arm64 python3.11; much faster natively.
        "$HOST_PYTHON" -m compileall -q -j 0 "$SYSROOT/usr/lib/python3.11" >/dev/null 2>&1 || true
    else
        run_python -m compileall -q "$SYSROOT/usr/lib/python3.11" >/dev/null 2>&1 || true
    fi
    stamp_set stdlib-pyc "$(cat "$STAMPS/sysroot")"
}

# --------------------------------------------------------------------------
# Step 3: arm64 wheels from PyPI into the sysroot's dist-packages
# --------------------------------------------------------------------------
setup_wheels() {
    local key="$ARM64_PACKAGES"
    if stamp_ok wheels "$key" && [ -d "$SITE" ]; then
        log "wheels: $ARM64_PACKAGES - already installed"
        return
    fi
    stamp_clear wheels
    log "wheels: downloading arm64 wheels for CPython 3.11: $ARM64_PACKAGES"
    local dl=$WHEELS/base tmp=$SITE.tmp
    rm -rf "$dl" "$tmp"; mkdir -p "$dl"
    # shellcheck disable=SC2086
    host_pip download -q "${PIP_TARGET_ARGS[@]}" -d "$dl" $ARM64_PACKAGES >&2 \
        || die "pip download of the arm64 wheels failed"
    log "wheels: installing into $SITE"
    local compile=--compile
    host_is_py311 || compile=--no-compile
    # shellcheck disable=SC2086
    host_pip install -q --no-index --find-links "$dl" "${PIP_TARGET_ARGS[@]}" \
        --target "$tmp" --no-warn-conflicts --no-warn-script-location $compile \
        $ARM64_PACKAGES >&2 || die "pip install of the arm64 wheels failed"
    # Make sys.executable the wrapper (when run through it), so that code on
    # the device that starts `sys.executable ...` starts the emulated Python
    # again instead of trying to execute an arm64 binary on the host.
    cat > "$tmp/edgeconv_arm64.pth" <<'EOF'
import os, sys; sys.executable = os.environ.get("EDGECONV_ARM64_PYTHON") or sys.executable
EOF
    rm -rf "$SITE"; mv "$tmp" "$SITE"
    rm -rf "$dl"
    stamp_set wheels "$key"
    log "wheels: $(find "$SITE" -maxdepth 1 -name '*.dist-info' -printf '%f\n' | sed 's|\.dist-info$||' | sort | tr '\n' ' ')"
}

# --------------------------------------------------------------------------
# Step 4 (optional): ExecuTorch runtime + torch, as a separate layer
# --------------------------------------------------------------------------
executorch_installed() { [ -f "$STAMPS/executorch" ] && [ -d "$ET_SITE" ]; }

# Add the layer to the device's sys.path (after dist-packages).
link_executorch() {
    realpath --relative-to="$SITE" "$ET_SITE" > "$SITE/edgeconv_executorch.pth"
}

setup_executorch() {
    local key="$EXECUTORCH_PACKAGES + $EXECUTORCH_RUNTIME_EXTRAS"
    if [ "$WITH_EXECUTORCH" != 1 ]; then
        if executorch_installed; then
            link_executorch
            log "executorch: installed earlier, kept ($ET_SITE; delete it to remove)"
        fi
        return
    fi
    if stamp_ok executorch "$key" && [ -d "$ET_SITE" ]; then
        link_executorch
        log "executorch: $EXECUTORCH_PACKAGES - already installed"
        return
    fi
    stamp_clear executorch
    local dl=$WHEELS/executorch tmp=$ET_SITE.tmp pkg torch_spec="" other=""
    for pkg in $EXECUTORCH_PACKAGES; do
        case $pkg in torch|torch[=\<\>~!]*) torch_spec=$pkg ;; *) other="$other $pkg" ;; esac
    done
    [ -n "$torch_spec" ] || torch_spec=torch
    log "executorch: downloading$other and $torch_spec with its CUDA libraries (several GB)"
    rm -rf "$dl" "$tmp"; mkdir -p "$dl"
    # torch with all its dependencies: PyPI's arm64 torch is a CUDA build and
    # its libraries do not load without the CUDA runtime libraries.
    host_pip download -q "${PIP_TARGET_ARGS[@]}" -d "$dl" "$torch_spec" >&2 \
        || die "pip download of $torch_spec failed"
    # executorch itself without its host-side (export tooling) dependencies.
    # shellcheck disable=SC2086
    host_pip download -q --no-deps "${PIP_TARGET_ARGS[@]}" -d "$dl" $other $EXECUTORCH_RUNTIME_EXTRAS >&2 \
        || die "pip download of$other failed"
    log "executorch: installing into $ET_SITE"
    local compile=--compile
    host_is_py311 || compile=--no-compile
    # triton (GPU kernel compiler) is not needed to run on the CPU.
    local wheels=()
    while IFS= read -r -d '' pkg; do
        case ${pkg##*/} in triton-*) ;; *) wheels+=("$pkg") ;; esac
    done < <(find "$dl" -name '*.whl' -print0)
    host_pip install -q --no-index --no-deps "${PIP_TARGET_ARGS[@]}" --target "$tmp" \
        --no-warn-conflicts --no-warn-script-location $compile "${wheels[@]}" >&2 \
        || die "pip install of the executorch layer failed"
    rm -rf "$ET_SITE"; mv "$tmp" "$ET_SITE"
    rm -rf "$dl"
    link_executorch
    stamp_set executorch "$key"
    log "executorch: $ET_SITE ($(du -sh "$ET_SITE" | cut -f1))"
}

# --------------------------------------------------------------------------
# Step 5: the wrapper
# --------------------------------------------------------------------------
write_wrapper() {
    mkdir -p "$BIN"
    cat > "$WRAPPER.tmp" <<EOF
#!/bin/sh
# Python 3.11 of the emulated arm64 device (Debian 12 arm64 sysroot run by
# qemu-aarch64 user-mode emulation).  Use it like python3:
#   $WRAPPER -c 'import platform; print(platform.machine())'
# Written by bench_device/setup_arm64.sh.
#   QEMU_CPU                   emulated core (default: $DEFAULT_QEMU_CPU)
#   EDGECONV_ARM64_PYTHONPATH  PYTHONPATH inside the device
self=\$(readlink -f "\$0")
here=\$(cd "\$(dirname "\$self")/.." && pwd -P)
sysroot=\$here/sysroot
export QEMU_CPU="\${QEMU_CPU:-$DEFAULT_QEMU_CPU}"
# The host's Python settings and preloads are for x86_64 and must not leak in.
unset PYTHONHOME PYTHONPATH PYTHONSTARTUP PYTHONEXECUTABLE LD_PRELOAD LD_LIBRARY_PATH QEMU_LD_PREFIX
[ -n "\${EDGECONV_ARM64_PYTHONPATH:-}" ] && export PYTHONPATH="\$EDGECONV_ARM64_PYTHONPATH"
export PYTHONNOUSERSITE=1
export EDGECONV_ARM64_PYTHON="\$self"
exec "\$here/qemu/qemu-aarch64" -L "\$sysroot" "\$sysroot/usr/bin/python3.11" "\$@"
EOF
    chmod 755 "$WRAPPER.tmp"; mv -f "$WRAPPER.tmp" "$WRAPPER"
    ln -sfn python3 "$BIN/python3.11"
    ln -sfn python3 "$BIN/python"
    ln -sfn ../qemu/qemu-aarch64 "$BIN/qemu-aarch64"
}

run_python() { "$WRAPPER" "$@"; }

# --------------------------------------------------------------------------
# Step 6: smoke test
# --------------------------------------------------------------------------
run_check() {
    local args=()
    if executorch_installed && { [ "$WITH_EXECUTORCH" = 1 ] || [ "$CHECK_ONLY" = 1 ]; }; then
        args+=(--require onnxruntime,litert,executorch)
    else
        args+=(--require onnxruntime,litert --runtimes onnxruntime,litert)
    fi
    log "check: running selftest.py on the emulated device ${args[*]}"
    local t0=$SECONDS
    run_python "$SCRIPT_DIR/selftest.py" "${args[@]}" || die "smoke test failed"
    log "check: passed in $((SECONDS - t0)) s"
}

# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------
summary() {
    cat <<EOF

emulated arm64 device:
  cache:    $ARM ($(du -sh "$ARM" 2>/dev/null | cut -f1))
  qemu:     $QEMU (version $(qemu_version "$QEMU"))
  sysroot:  $SYSROOT  (Debian 12 arm64, Python 3.11)
  packages: $SITE
EOF
    if executorch_installed; then
        echo "  executorch layer: $ET_SITE"
    fi
    cat <<EOF
run python on the device with the wrapper:
  $WRAPPER
or directly:
  QEMU_CPU=$DEFAULT_QEMU_CPU PYTHONNOUSERSITE=1 $QEMU -L $SYSROOT $SYSROOT/usr/bin/python3.11
EOF
}

main() {
    [ "$(uname -m)" = x86_64 ] || log "warning: host is $(uname -m), this script is meant for x86_64 hosts"
    need apt-get "this script needs a Debian-based host"
    need dpkg-deb "this script needs a Debian-based host"
    need tar "install tar"
    need realpath "install coreutils"
    [ -f "$DEBIAN_KEYRING" ] || die "$DEBIAN_KEYRING missing: apt-get install debian-archive-keyring"

    if [ "$FORCE" = 1 ] && [ "$CHECK_ONLY" = 0 ]; then
        log "removing $ARM (--force)"
        rm -rf "$ARM"
    fi
    mkdir -p "$ARM"
    # One run at a time per cache (tests may call this script concurrently).
    if command -v flock >/dev/null 2>&1; then
        exec 9> "$ARM/.lock"
        flock 9
    fi

    if [ "$CHECK_ONLY" = 1 ]; then
        if ! { [ -x "$WRAPPER" ] && [ -x "$QEMU" ] && [ -x "$SYSROOT/usr/bin/python3.11" ]; }; then
            die "the device is not set up yet: run $0 first"
        fi
        run_check
        summary
        return
    fi

    "$HOST_PYTHON" -m pip --version >/dev/null 2>&1 \
        || die "'$HOST_PYTHON -m pip' does not work: install pip (apt-get install python3-pip) or set PYTHON"

    setup_qemu
    setup_sysroot
    write_wrapper
    compile_stdlib
    setup_wheels
    setup_executorch
    if [ "$RUN_CHECK" = 1 ]; then run_check; fi
    log "done in $(( $(date +%s) - T_START )) s"
    summary
}

main

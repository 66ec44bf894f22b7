#!/usr/bin/env bash
# Builds every edgeleaf agent into wasm-agents/dist/<name>.wasm:
#   echo.wasm counter.wasm threshold.wasm cpu-temp.wasm http-poll.wasm hostile.wasm
#                                                        (Rust components, wasm32-wasip2)
#   upper-c.wasm readfile-c.wasm exit-c.wasm             (C, WASI preview1 command modules)
#
# Usage: wasm-agents/build.sh [--release] [--rust-only | --c-only]
#   Always builds the release profile (small, panic=abort); --release is accepted for
#   symmetry with cargo and ignored. Re-running when nothing changed takes about a second.
#
# Rust toolchain, in order of preference:
#   1. rustup's wasm32-wasip2 target, when `rustup target list --installed` has it;
#   2. Debian's rustc-web (1.96) with `-Z build-std`, wasi-libc, lld's wasm-ld, and the
#      wasm-component-ld linker that ships inside any rustup toolchain
#      (~/.rustup/toolchains/*/lib/rustlib/<host>/bin/wasm-component-ld). Override with
#      WASM_COMPONENT_LD=/path/to/wasm-component-ld and WASM_LD=/path/to/wasm-ld.
# C agents: clang + wasi-libc + libclang-rt-14-dev-wasm32 (Debian).
# See README.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

build_rust=1
build_c=1
for arg in "$@"; do
    case "$arg" in
        --release) ;; # always release
        --rust-only) build_c=0 ;;
        --c-only) build_rust=0 ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

# Rust agents: cargo package name == dist name.
rust_agents=(echo counter threshold cpu-temp http-poll hostile)
# C agents: dist name -> source.
c_names=(upper-c readfile-c exit-c)
c_sources=(examples/upper-c/upper.c examples/readfile-c/readfile.c test-agents/exit-c/exit.c)

wasi_sysroot=/usr
wasi_libdir=/usr/lib/wasm32-wasi
target=wasm32-wasip2
dist="$here/dist"
mkdir -p "$dist"

missing_pkgs=()
missing_other=()
need_pkg() { # need_pkg PACKAGE WHAT
    case " ${missing_pkgs[*]-} " in
        *" $1 "*) ;;
        *) missing_pkgs+=("$1"); echo "build.sh: missing: $2 (Debian package $1)" >&2 ;;
    esac
}

find_wasm_ld() {
    if [[ -n "${WASM_LD:-}" ]]; then echo "$WASM_LD"; return; fi
    local c
    for c in /usr/bin/wasm-ld /usr/bin/wasm-ld-14 /usr/bin/wasm-ld-1[5-9] /usr/bin/wasm-ld-[2-9][0-9]; do
        [[ -x "$c" ]] && { echo "$c"; return; }
    done
    command -v wasm-ld 2>/dev/null || true
}

find_component_ld() {
    if [[ -n "${WASM_COMPONENT_LD:-}" ]]; then echo "$WASM_COMPONENT_LD"; return; fi
    local home="${RUSTUP_HOME:-$HOME/.rustup}" c
    # Prefer the stable toolchain's copy, then any other toolchain's, then one on PATH
    # (`cargo install --locked wasm-component-ld`).
    for c in "$home"/toolchains/stable-*/lib/rustlib/*/bin/wasm-component-ld \
             "$home"/toolchains/*/lib/rustlib/*/bin/wasm-component-ld; do
        [[ -x "$c" ]] && { echo "$c"; return; }
    done
    command -v wasm-component-ld 2>/dev/null || true
}

copy_if_changed() { # copy_if_changed SRC DEST
    if ! cmp -s "$1" "$2" 2>/dev/null; then cp "$1" "$2"; fi
}

# ---------------------------------------------------------------------------------
# Work out the Rust route and check the toolchain before building anything.
route=""
if (( build_rust )); then
    if command -v rustup >/dev/null 2>&1 \
        && rustup target list --installed 2>/dev/null | grep -qx "$target"; then
        route=rustup
    else
        route=debian
        rustc_deb=/usr/bin/rustc
        cargo_deb=/usr/bin/cargo
        [[ -x $rustc_deb ]] || need_pkg rustc-web "/usr/bin/rustc (Debian's rustc, >= 1.95)"
        [[ -x $cargo_deb ]] || need_pkg cargo-web "/usr/bin/cargo"
        [[ -d /usr/lib/rustlib/src/rust/library ]] || need_pkg rust-web-src "the std sources for -Z build-std (/usr/lib/rustlib/src/rust/library)"
        [[ -f $wasi_libdir/libc.a ]] || need_pkg wasi-libc "wasi-libc ($wasi_libdir/libc.a)"
        wasm_ld="$(find_wasm_ld)"
        [[ -n "$wasm_ld" ]] || need_pkg lld "wasm-ld (/usr/bin/wasm-ld-14)"
        component_ld="$(find_component_ld)"
        if [[ -z "$component_ld" ]]; then
            missing_other+=("wasm-component-ld: not found under ~/.rustup/toolchains/*/lib/rustlib/*/bin/ or on PATH; install any rustup toolchain (it ships there), or \`cargo install --locked wasm-component-ld\`, or set WASM_COMPONENT_LD")
        fi
        if [[ -x $rustc_deb ]] && ! $rustc_deb --print target-list | grep -qx "$target"; then
            missing_other+=("$rustc_deb ($($rustc_deb -V)) does not know the target $target; a newer rustc-web is needed")
        fi
    fi
fi
if (( build_c )); then
    command -v clang >/dev/null 2>&1 || need_pkg clang "clang"
    [[ -f $wasi_libdir/libc.a ]] || need_pkg wasi-libc "wasi-libc ($wasi_libdir/libc.a)"
    if ! compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a" >/dev/null; then
        need_pkg libclang-rt-14-dev-wasm32 "compiler-rt builtins for wasm32 (libclang_rt.builtins-wasm32.a)"
    fi
fi
if (( ${#missing_pkgs[@]} || ${#missing_other[@]} )); then
    {
        echo
        echo "build.sh: the WASM toolchain is incomplete."
        if (( ${#missing_pkgs[@]} )); then
            echo "Install the missing Debian packages with:"
            echo "    apt-get install -y ${missing_pkgs[*]}"
        fi
        for m in "${missing_other[@]+"${missing_other[@]}"}"; do echo "Also: $m"; done
        echo "(Or, with rustup and network access: rustup target add $target.)"
    } >&2
    exit 1
fi

# ---------------------------------------------------------------------------------
# Rust components.
if (( build_rust )); then
    target_dir="${CARGO_TARGET_DIR:-$here/target}"
    start=$SECONDS
    if [[ $route == rustup ]]; then
        echo "build.sh: rust agents with rustup's $target target ($(rustc -V))"
        env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS \
            cargo build --release --target "$target" --workspace
    else
        echo "build.sh: rust agents with Debian's $($rustc_deb -V) + build-std"
        echo "build.sh:   linker $component_ld (--wasm-ld-path=$wasm_ld)"
        # rustup's shims in ~/.cargo/bin must not win over /usr/bin here.
        env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS \
        PATH="/usr/bin:$PATH" \
        RUSTC="$rustc_deb" \
        RUSTC_BOOTSTRAP=1 \
        CARGO_TARGET_WASM32_WASIP2_LINKER="$component_ld" \
        CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS="-C link-self-contained=no -L $wasi_libdir -C link-arg=--wasm-ld-path=$wasm_ld" \
            "$cargo_deb" build --release --target "$target" --workspace \
            -Z build-std=std,panic_abort
    fi
    for name in "${rust_agents[@]}"; do
        out="$target_dir/$target/release/${name//-/_}.wasm"
        [[ -f "$out" ]] || { echo "build.sh: expected $out after the build" >&2; exit 1; }
        copy_if_changed "$out" "$dist/$name.wasm"
    done
    echo "build.sh: rust agents done in $((SECONDS - start)) s"
fi

# ---------------------------------------------------------------------------------
# C preview1 command modules (each compiles in well under a second; rebuilt only when
# the source or this script is newer than the output).
if (( build_c )); then
    for i in "${!c_names[@]}"; do
        name="${c_names[$i]}"
        src="$here/${c_sources[$i]}"
        out="$dist/$name.wasm"
        if [[ ! -f "$out" || "$src" -nt "$out" || "$0" -nt "$out" ]]; then
            echo "build.sh: $name: clang ${c_sources[$i]}"
            clang --target=wasm32-wasi --sysroot="$wasi_sysroot" -O2 -Wall -Wextra -Werror \
                -Wl,--strip-all -o "$out.tmp" "$src"
            mv "$out.tmp" "$out"
        fi
    done
fi

# ---------------------------------------------------------------------------------
echo "build.sh: dist/"
for name in "${rust_agents[@]}" "${c_names[@]}"; do
    f="$dist/$name.wasm"
    [[ -f "$f" ]] && printf '  %-16s %8d bytes\n' "$name.wasm" "$(stat -c %s "$f")"
done

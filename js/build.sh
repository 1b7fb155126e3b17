#!/usr/bin/env bash
# Builds the npm package @regcred/policy and the policy page from the workspace:
#   target/js/package/              the package's files (what `npm pack` packs)
#   target/js/regcred-policy-VERSION.tgz   the packed package
#   target/js/page/                 the static page (index.html, page.css, page.js)
# The policy crate is built for wasm32 with `--features js` (into the same target
# directory as host/tests/wasm/node.rs), shrunk with wasm-opt, run through wasm-bindgen
# (`--target web`: the one glue every entry point shares), and the CommonJS entry and the
# page are bundled with esbuild. Needs what scripts/setup installs: the wasm32 target,
# wasm-bindgen-cli at the Cargo.lock version, binaryen, Node.js and `npm ci` in js/ and
# js/page/. Fails loudly when any of it is missing.
#
# `js/build.sh --in-place` (package.json's `prepack`, so `npm pack` and `npm publish` in
# js/, and a git dependency, get a complete package) writes the package's built files into
# js/ itself, beside package.json (they are git-ignored), and neither packs nor builds the
# page.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/target/js
pkg=$out/package
page=$out/page
in_place=false
case "${1:-}" in
  "") ;;
  --in-place) in_place=true; pkg=$root/js ;;
  *) echo "js/build.sh: unknown argument $1 (the only one is --in-place)" >&2; exit 2 ;;
esac
# What the package holds besides package.json and README.md (package.json's "files").
built_files=(index.d.ts index.d.cts api.js browser.js node.mjs node.cjs wasm)

die() { echo "js/build.sh: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is missing: run scripts/setup"; }
need cargo
need node
need npm
need wasm-bindgen
need wasm-opt

# The package's version is the workspace's.
workspace_version=$(awk '/^\[workspace.package\]/ { p = 1; next } /^\[/ { p = 0 } p && /^version = / { gsub(/version = |"/, ""); print; exit }' Cargo.toml)
package_version=$(node -p 'require("./js/package.json").version')
[ "$workspace_version" = "$package_version" ] \
  || die "js/package.json has version $package_version but the workspace (Cargo.toml) has $workspace_version: make them equal"

locked=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
installed=$(wasm-bindgen --version | awk '{ print $2 }')
[ "$installed" = "$locked" ] \
  || die "wasm-bindgen-cli is $installed but Cargo.lock has wasm-bindgen $locked: run scripts/setup"

esbuild=$root/js/node_modules/.bin/esbuild
[ -x "$esbuild" ] || die "esbuild is missing: run scripts/setup (npm ci in js/)"
[ -d "$root/js/page/node_modules/yaml" ] || die "yaml is missing: run scripts/setup (npm ci in js/page/)"

echo "js/build.sh: building the policy crate for wasm32 with --features js" >&2
wasm_target=$root/target/regcred-policy-js
env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u RUSTC_WORKSPACE_WRAPPER \
  cargo build --quiet --package regcred-policy --lib --features js \
  --target wasm32-unknown-unknown --profile wasm-release --target-dir "$wasm_target"

if $in_place; then
  (cd "$pkg" && rm -rf "${built_files[@]}")
  mkdir -p "$pkg/wasm"
else
  rm -rf "$pkg" "$page"
  mkdir -p "$pkg/wasm" "$page"
fi
# wasm-opt before wasm-bindgen: Debian's binaryen (version 108) rewrites the externref
# table wasm-bindgen adds, which then fails to instantiate; on rustc's output it is safe.
opt_dir=$out/opt
rm -rf "$opt_dir" && mkdir -p "$opt_dir"
wasm-opt -Os --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int \
  --enable-mutable-globals --enable-multivalue --enable-reference-types \
  "$wasm_target/wasm32-unknown-unknown/wasm-release/regcred_policy.wasm" -o "$opt_dir/regcred_policy.wasm"
wasm-bindgen --target web --no-typescript --out-dir "$pkg/wasm" "$opt_dir/regcred_policy.wasm" \
  2> >(grep -v "target_features" >&2)

$in_place || cp js/package.json js/README.md "$pkg/"
cp js/src/api.js js/src/browser.js js/src/node.mjs "$pkg/"
cp js/src/index.d.ts "$pkg/index.d.ts"
cp js/src/index.d.ts "$pkg/index.d.cts"
# The CommonJS entry: node-cjs.js with api.js and the glue bundled in. The glue's
# `import.meta.url` only serves its asynchronous loader, which node.cjs never calls.
# Bundled from inside the package, so the paths esbuild writes into its comments are the
# same wherever the package is built (js/ for `npm pack`, target/js/package here).
cp js/src/node-cjs.js "$pkg/node-cjs.js"
(cd "$pkg" && "$esbuild" node-cjs.js --bundle --platform=node --format=cjs --target=node20 \
  --log-level=warning --log-override:empty-import-meta=silent --outfile=node.cjs)
rm "$pkg/node-cjs.js"

if $in_place; then
  echo "js/build.sh: the package's files are in $pkg (${built_files[*]})" >&2
  exit 0
fi
# (--ignore-scripts: the copy has no build.sh for the prepack script to run.)
(cd "$out" && npm pack --silent --ignore-scripts "$pkg" >/dev/null)
tarball=$out/regcred-policy-$package_version.tgz
[ -f "$tarball" ] || die "npm pack made no $tarball"

# The page: one script with yaml, the package's browser entry and the module's bytes
# inlined (esbuild's binary loader), so it loads nothing but its own three files and its
# CSP can say connect-src 'none'.
cp js/page/index.html js/page/page.css "$page/"
"$esbuild" js/page/src/page.js --bundle --format=esm --target=es2022 --minify \
  --alias:@regcred/policy="$pkg" --loader:.wasm=binary --loader:.yaml=text \
  --log-level=warning --log-override:empty-import-meta=silent --outfile="$page/page.js"

echo "js/build.sh: package $pkg, tarball $tarball, page $page/index.html" >&2

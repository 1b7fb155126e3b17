#!/usr/bin/env bash
# The JavaScript package's and the page's tests, run by scripts/test:
#  1. js/build.sh builds the package, packs it, and builds the page;
#  2. the packed tarball is installed into an empty temporary project (js/test/'s
#     package.json and package-lock.json: typescript, @types/node and yaml from the npm
#     registry) and tested there as a user gets it: the shared vectors through the ES
#     module and CommonJS entries under `node --test`, the CLI comparisons against the
#     real `regcred` binary, and `tsc` on TypeScript files using the types;
#  3. the page's browser tests (js/page/test/) in Debian's chromium with playwright-core.
# Everything it needs comes from scripts/setup; anything missing fails loudly.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

die() { echo "js/test.sh: $*" >&2; exit 1; }
command -v node >/dev/null 2>&1 || die "node is missing: run scripts/setup"
command -v npm >/dev/null 2>&1 || die "npm is missing: run scripts/setup"

js/build.sh
version=$(node -p 'require("./js/package.json").version')
built=$root/target/js/regcred-policy-$version.tgz

# The npm way from a checkout: `npm pack` in js/ runs the prepack script (js/build.sh
# --in-place), so its tarball has every entry file. It must hold exactly what
# js/build.sh's does, byte for byte; the consumer below installs it.
npm_way=$root/target/js/npm-way
rm -rf "$npm_way" && mkdir -p "$npm_way"
(cd js && npm pack --silent --pack-destination "$npm_way" >/dev/null) || die "npm pack in js/ failed"
tarball=$npm_way/regcred-policy-$version.tgz
[ -f "$tarball" ] || die "npm pack in js/ made no $tarball"
listing() { tar -xzOf "$1" --wildcards '*' | sha256sum; tar -tzf "$1" | sort; }
entries=$(tar -tzf "$tarball")
for entry in package/node.mjs package/node.cjs package/browser.js package/index.d.ts package/wasm/regcred_policy_bg.wasm; do
  grep -qx "$entry" <<<"$entries" || die "the npm-way tarball has no $entry"
done
[ "$(listing "$tarball")" = "$(listing "$built")" ] \
  || die "npm pack in js/ and js/build.sh packed different packages: $(diff <(listing "$tarball") <(listing "$built"))"

# The CLI the package is compared with (`--bin` finds it in whichever crate has it).
cargo build --quiet --bin regcred
bin=$root/target/debug/regcred
[ -x "$bin" ] || die "cargo built no $bin"

consumer=$(mktemp -d "${TMPDIR:-/tmp}/regcred-js-consumer.XXXXXX")
trap 'rm -rf "$consumer"' EXIT
cp js/test/package.json js/test/package-lock.json js/test/tsconfig.json \
  js/test/*.test.mjs js/test/*.test.cjs js/test/vectors.cjs js/test/types.mts js/test/types.cts \
  "$consumer/"
(
  cd "$consumer"
  echo "js/test.sh: installing the test project and $tarball in $consumer" >&2
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  npm install --no-save --no-audit --no-fund --loglevel=error "$tarball" >/dev/null
  [ -f node_modules/@regcred/policy/package.json ] || die "the tarball did not install"
  REGCRED_VECTORS=$root/tests/vectors REGCRED_EXAMPLES=$root/examples REGCRED_BIN=$bin \
    REGCRED_VERSION=$version \
    node --test vectors.test.mjs vectors.test.cjs cli.test.mjs
  echo "js/test.sh: tsc --noEmit on types.mts and types.cts" >&2
  npx --no-install tsc -p tsconfig.json
)

[ -x /usr/bin/chromium ] || die "/usr/bin/chromium is missing: run scripts/setup"
[ -d js/page/node_modules/playwright-core ] || die "playwright-core is missing: run scripts/setup"
REGCRED_PAGE_DIR=$root/target/js/page REGCRED_ARTIFACTS=$root/target/js/screenshots \
  REGCRED_BIN=$bin REGCRED_EXAMPLES=$root/examples \
  node --test js/page/test/

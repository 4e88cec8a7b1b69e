#!/usr/bin/env bash
# policy_tool validate on every class of bad input the loader must refuse (exit 1, naming file and
# key), on legal edge values (exit 0), and diff-tenant's confinement. Run by .ci/run from the repo
# root; each case works on a scratch copy of examples/policies.
set -euo pipefail
cd "$(dirname "$0")/.."

expect_invalid() { # expect_invalid <dir> <exit> <text the stderr must hold>...
  local d=$1 want=$2; shift 2
  set +e; local err; err=$(timeout 60 cargo run -q -p nodus-examples --example policy_tool -- validate "$d" 2>&1 >/dev/null); local got=$?; set -e
  if [ "$got" -ne "$want" ]; then echo "expected exit $want, got $got: $err"; exit 1; fi
  for s in "$@"; do grep -qF -- "$s" <<<"$err" || { echo "stderr lacks '$s': $err"; exit 1; }; done
  rm -rf "$d"
}
sample() { local d; d=$(mktemp -d); cp -r examples/policies/. "$d"; echo "$d"; }

d=$(sample); rm "$d/system.toml"; mkdir "$d/system.toml"; expect_invalid "$d" 1 system.toml directory
d=$(sample); rm "$d/tenants/acme.toml"; ln -s "$d/gone.toml" "$d/tenants/acme.toml"; expect_invalid "$d" 1 tenants/acme.toml "symbolic link"
d=$(sample); ln -s "$d/tenants/loop.toml" "$d/tenants/loop.toml"; expect_invalid "$d" 1 tenants/loop.toml "symbolic link"
d=$(sample); mkdir "$d/tenants/archive"; expect_invalid "$d" 1 tenants/archive
d=$(sample); mkdir "$d/users/acme/team"; expect_invalid "$d" 1 users/acme/team
d=$(sample); printf '[notes]\nmax_attachments = "\xff"\n' > "$d/tenants/acme.toml"; expect_invalid "$d" 1 "1 policy problem:" tenants/acme.toml:2 UTF-8
d=$(sample); printf '[keys."app.x"]\ntype = "integer"\nscope = "user"\nmin = 10\nmax = 1\n' >> "$d/schema.toml"; expect_invalid "$d" 1 schema.toml '`app.x`' '`min`'
d=$(sample); printf '[keys."app.x"]\ntype = "float"\nscope = "user"\nmax = nan\n' >> "$d/schema.toml"; expect_invalid "$d" 1 schema.toml '`app.x`'
d=$(sample); printf '[keys."app.x"]\ntype = "integer"\nscope = "user"\nmax = 0.5\n' >> "$d/schema.toml"; expect_invalid "$d" 1 schema.toml '`app.x`'
d=$(sample); printf '[keys."app.x"]\ntype = "integer"\nscope = "user"\nmax = 9007199254740993\n' >> "$d/schema.toml"; expect_invalid "$d" 1 schema.toml '`app.x`'
d=$(sample); sed -i 's/burst = 2 }/burst = 0 }/' "$d/tenants/acme.toml"; expect_invalid "$d" 1 tenants/acme.toml '`rate.limits`' '`strict`' burst
d=$(sample); sed -i 's/, burst = 2 }/ }/' "$d/tenants/acme.toml"; expect_invalid "$d" 1 tenants/acme.toml '`rate.limits`' '`burst`'
d=$(sample); sed -i 's/"NOFORN"\]/"crypto"]/' "$d/system.toml"; expect_invalid "$d" 1 system.toml '`mac.compartments`'
d=$(sample); sed -i 's/^levels = .*/levels = ["PUBLIC", "PRIVATE"]/' "$d/system.toml"; expect_invalid "$d" 1 system.toml '`mac.levels`' '`notes.default_label`'
d=$(sample); printf '[keys."rbac.roles.extra"]\ntype = "integer"\nscope = "tenant"\n' >> "$d/schema.toml"; expect_invalid "$d" 1 schema.toml '`rbac.roles.extra`' '`rbac.roles`'
d=$(sample); printf '[rbac.roles]\nops = ["system.*"]\n' > "$d/tenants/initech.toml"; expect_invalid "$d" 1 tenants/initech.toml:2 '`ops`' '`system.*`'
d=$(sample); seq -f 'unknown_%06g = 1' 0 99999 > "$d/tenants/acme.toml"; expect_invalid "$d" 1 "100000 policy problems (the first 100 shown):" "… and 99900 more"
# Legal edge values: 256 levels.
d=$(sample); L=$(seq -f '"L%g"' 0 255 | paste -sd,); sed -i "s/^levels = .*/levels = [$L]/" "$d/system.toml"; sed -i 's/"UNCLASSIFIED"/"L0"/' "$d/schema.toml"; sed -i 's/CONFIDENTIAL\/\/CRYPTO/L255\/\/CRYPTO/' "$d/users/acme/alice.toml"; expect_invalid "$d" 0

# diff-tenant reads only the named tenant's files: another tenant's broken file and an unreadable
# system file neither fail it nor appear in its output.
d=$(sample); printf 'bogus = [[[' > "$d/tenants/globex.toml"; printf '\xff' > "$d/system.toml"; sed -i 's/max_attachments = 25/max_attachments = 30/' "$d/tenants/acme.toml"
out=$(cargo run -q -p nodus-examples --example policy_tool -- diff-tenant examples/policies "$d" acme 2>&1)
if grep -q globex <<<"$out" || ! grep -q '"notes.max_attachments"' <<<"$out"; then echo "diff-tenant leaked or missed: $out"; exit 1; fi
rm -rf "$d"
echo "policy_tool cases: all as expected"

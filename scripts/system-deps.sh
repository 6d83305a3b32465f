#!/usr/bin/env bash
# System packages the tests use: bubblewrap (sandboxed servers), podman + runc (containers),
# chromium (the status page test drives Debian's Chromium with Playwright; never `playwright install`).
# Installed with apt when missing and when we are root; otherwise the tests that need them skip.
set -uo pipefail
need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
[ -x /usr/libexec/podman/catatonit ] || command -v catatonit >/dev/null 2>&1 || need+=(catatonit)
command -v git >/dev/null 2>&1 || need+=(git)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${need[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}") \
    >/tmp/mcp-gateway-apt.log 2>&1 || echo "warning: apt-get install failed (see /tmp/mcp-gateway-apt.log); those tests will skip"
fi
exit 0

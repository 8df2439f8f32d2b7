#!/usr/bin/env bash
# Installs what the test suite and benchmarks need on a fresh Debian machine (run as root):
#   from Debian's stable packages: PostgreSQL server binaries (tests start a throwaway cluster),
#     skopeo, umoci, docker-registry (the reference registry, for benchmarks), jq, openssl;
#   from Debian's next release (trixie): cosign, oras and sigstore-go. They are Go binaries
#     needing only libc6 >= 2.34; they are downloaded with apt into a private apt state (the
#     system's sources are left alone) and unpacked, not installed, under $CLIENTS_DIR.
# Idempotent. Afterwards: export PATH="${CLIENTS_DIR:-/opt/oci-clients}/usr/bin:$PATH"
set -euo pipefail
C=${CLIENTS_DIR:-/opt/oci-clients}
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# A download that fails for a moment (a mirror's hiccup) is tried again rather than failing CI.
RETRY=(-o Acquire::Retries=3)

need=()
for b in skopeo umoci docker-registry jq openssl; do command -v "$b" >/dev/null || need+=("$b"); done
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing from Debian: ${need[*]}"
  $SUDO apt-get "${RETRY[@]}" update -qq
  $SUDO apt-get "${RETRY[@]}" install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -x "$C/usr/bin/cosign" ] || [ ! -x "$C/usr/bin/oras" ]; then
  echo "fetching cosign, oras and sigstore-go from Debian trixie into $C"
  uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
  A=$C/.apt
  $SUDO mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$A/etc" "$C"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri trixie main" | $SUDO tee "$A/etc/sources.list" >/dev/null
  O=("${RETRY[@]}" -o "Dir::Etc::SourceList=$A/etc/sources.list" -o Dir::Etc::SourceParts=/nonexistent
     -o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A/cache" -o Dir::State::status=/var/lib/dpkg/status)
  $SUDO apt-get "${O[@]}" update -qq
  (cd "$A" && $SUDO apt-get "${O[@]}" -o APT::Sandbox::User=root download cosign oras sigstore-go >/dev/null)
  for d in "$A"/*.deb; do $SUDO dpkg -x "$d" "$C"; done
fi
# sed, not head: head may exit before oras has written its last line, and oras then dies of
# SIGPIPE, which pipefail turns into exit 141.
"$C/usr/bin/oras" version | sed -n 1p
"$C/usr/bin/cosign" version 2>/dev/null | grep -i gitversion || true
skopeo --version
umoci --version

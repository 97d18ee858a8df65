#!/usr/bin/env bash
# Build deploy/Dockerfile with a daemonless builder (podman) on a machine that cannot pull base images:
# the base is a Debian bookworm root made here by debootstrap from Debian's packages (its Python 3.11 is the
# one python:3.11-slim has), imported as a local image and passed as the Dockerfile's BASE build argument.
#
#   bash deploy/image/build-local.sh            # -> localhost/model-monitor:dev
#   MM_IMAGE=... MM_BASE_IMAGE=... bash deploy/image/build-local.sh
#
# Needs root (or a working rootless podman), and the Debian packages podman and debootstrap.
set -euo pipefail
cd "$(dirname "$0")/../.."
BASE_IMAGE=${MM_BASE_IMAGE:-localhost/mm-debian-python:bookworm}
IMAGE=${MM_IMAGE:-localhost/model-monitor:dev}
ROOTFS=${MM_ROOTFS:-/var/tmp/mm-debian-rootfs}

for tool in podman debootstrap; do
  command -v "$tool" >/dev/null || { echo "build-local: $tool is not installed (apt-get install -y $tool)" >&2; exit 2; }
done

if ! podman image exists "$BASE_IMAGE"; then
  echo "build-local: making the base $BASE_IMAGE from Debian packages in $ROOTFS"
  rm -rf "$ROOTFS"
  # Debian's default mirror (debootstrap's own); python3-venv gives the image a pip of its own.
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$ROOTFS"
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
  # The build's pip reaches the package index through whatever TLS this machine trusts: its extra CAs go into
  # the base's trust store, and pip is pointed at that store (pip's own bundle would not know them).
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOTFS/usr/local/share/ca-certificates/"
    chroot "$ROOTFS" update-ca-certificates >/dev/null
  fi
  tar -C "$ROOTFS" -c . | podman import --change 'CMD ["/bin/bash"]' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' - "$BASE_IMAGE"
  rm -rf "$ROOTFS"
fi

# chroot isolation: RUN steps need no OCI runtime (crun refuses a cgroup v1/v2 hybrid host: "cgroups in hybrid
# mode not supported").
podman build --isolation "${MM_ISOLATION:-chroot}" --build-arg "BASE=$BASE_IMAGE" -f deploy/Dockerfile -t "$IMAGE" .
echo "build-local: built $IMAGE"

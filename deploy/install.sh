#!/bin/sh
# Install differland_dist with the JAX build that matches the accelerator.
#
#   sh deploy/install.sh VARIANT [SRC]
#
#   VARIANT  cpu | cuda | tpu
#            cpu  -> SRC[cloud]        (jax CPU wheels)
#            cuda -> SRC[cuda,cloud]   (jax[cuda12]: CUDA 12 runtime from pip wheels; the host
#                                       only needs an NVIDIA driver, >= 525)
#            tpu  -> SRC[tpu,cloud]    (jax[tpu]: libtpu; only works on a TPU VM / GKE TPU node)
#            [cloud]: gcsfs and s3fs, for gs:// and s3:// stores (clusters read object storage)
#   SRC      path to the source tree (default: the repository this script lives in)
#
# Environment:
#   RAY_VERSION  Ray to install next to the package (default 2.60.0). Every node of a cluster,
#                the container image and the KubeRay `rayVersion` must agree on it.
#   PYTHON       interpreter whose environment receives the install (default: python3)
#   DRY_RUN=1    print the install command instead of running it (used by tests/test_deploy.py)
#
# Used by deploy/Dockerfile (image builds) and by the setup commands of deploy/ray/gcp-*.yaml
# (Ray cluster launcher), so both install exactly the same thing.
set -eu

variant="${1:-}"
src="${2:-$(cd "$(dirname "$0")/.." && pwd)}"
ray_version="${RAY_VERSION:-2.60.0}"
python="${PYTHON:-python3}"
find_links=""

case "$variant" in
  cpu)  spec="$src[cloud]" ;;
  cuda) spec="$src[cuda,cloud]" ;;
  tpu)  spec="$src[tpu,cloud]"
        # libtpu is on PyPI for current JAX; the find-links page keeps older pins resolvable.
        find_links="https://storage.googleapis.com/jax-releases/libtpu_releases.html" ;;
  *)    echo "install.sh: unknown VARIANT '$variant' (expected cpu, cuda or tpu)" >&2
        exit 2 ;;
esac

# etils[epath,epath-gcs] lets JAX use a gs:// persistent compilation cache (docs/cloud.md).
set -- "$python" -m pip install --no-cache-dir \
  "ray[default,data]==$ray_version" "etils[epath,epath-gcs]" "$spec"
# The tested versions of everything else (the README's install uses the same file).
if [ -f "$src/constraints.txt" ] || [ "${DRY_RUN:-0}" = "1" ]; then
  set -- "$@" -c "$src/constraints.txt"
fi
if [ -n "$find_links" ]; then
  set -- "$@" --find-links "$find_links"
fi

if [ "${DRY_RUN:-0}" = "1" ]; then
  echo "$@"
else
  "$@"
fi

# The worker image: the package with its compiled kernel, started as summa-worker.
#   docker build . -t summa-aggregation
# Machines that reach Debian's mirrors and PyPI but no image registry build on a local base
# (scripts/docker-base-image.sh makes one with debootstrap; scripts/start-docker.sh starts an
# engine without a bridge, hence --network host):
#   docker build --network host --build-arg BASE_IMAGE=summa-base:bookworm -t summa-aggregation .
# Any Debian-based image with python3 (3.10+) and python3-venv works as BASE_IMAGE: the build
# stage installs from apt only what the base lacks (gcc, the Python headers, venv). Both stages
# use the same base, so the venv's python symlink stays valid in the runtime image.
# Works with the classic builder and with BuildKit (no BuildKit-only syntax).
ARG BASE_IMAGE=python:3.11-slim

# ---- requirements: the third-party dependencies named in setup.cfg, nothing else, so that
# editing setup.cfg elsewhere (version, entry points) leaves the dependency layer cached.
FROM ${BASE_IMAGE} AS requirements
WORKDIR /req
COPY setup.cfg pyproject.toml ./
RUN python3 -c 'import configparser, re; \
c = configparser.ConfigParser(); c.read("setup.cfg"); \
reqs = [l.strip() for l in c["options"]["install_requires"].splitlines() if l.strip()]; \
t = open("pyproject.toml").read(); \
build = re.findall(r"\"([^\"]+)\"", re.search(r"requires\s*=\s*\[([^\]]*)\]", t).group(1)); \
open("requirements.txt", "w").write("\n".join(reqs) + "\n"); \
open("build-requirements.txt", "w").write("\n".join(build) + "\n")' \
    && cat requirements.txt build-requirements.txt

# ---- build: compiler, headers, venv at /opt/summa, the package with its Cython kernel.
FROM ${BASE_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Install only what is missing: python:3.11-slim has headers and venv, but no gcc; Debian's own
# python3 needs python3-dev (its headers) and gcc.
RUN set -eu; pkgs=""; \
    command -v gcc >/dev/null 2>&1 || pkgs="$pkgs gcc libc6-dev"; \
    python3 -c 'import os, sys, sysconfig; \
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        || pkgs="$pkgs python3-dev"; \
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || pkgs="$pkgs python3-venv"; \
    if [ -n "$pkgs" ]; then \
        echo "installing:$pkgs"; \
        apt-get update \
        && apt-get install -y --no-install-recommends $pkgs \
        && rm -rf /var/lib/apt/lists/*; \
    fi
RUN python3 -m venv /opt/summa
ENV PATH=/opt/summa/bin:$PATH
# Dependencies and build tools, cached apart from the sources.
COPY --from=requirements /req/requirements.txt /req/build-requirements.txt /tmp/
RUN pip install -r /tmp/build-requirements.txt -r /tmp/requirements.txt
WORKDIR /src
COPY pyproject.toml setup.py setup.cfg README.md ./
COPY cython_ext ./cython_ext
COPY mst ./mst
COPY wire ./wire
COPY worker ./worker
COPY daemon ./daemon
# The build tools are already in the venv (no isolated build env to download each time);
# afterwards they go, and pip alone stays.
RUN pip install --no-build-isolation --no-deps . \
    && pip uninstall -y cython wheel setuptools \
    && pip check \
    && python -c "from summa_aggregation.cython_ext import _kernel; print('kernel backend:', _kernel.backend())"

# ---- runtime: the same base and the venv; no compiler, no headers, no sources.
# It runs as user summa, uid and gid 10001 (fixed: the daemon's spawners run workers as
# 10001:10001 and give them their keys as that user), never as root, and works with a
# read-only root filesystem: nothing is written but /tmp (the spawners mount a small tmpfs
# there). The entrypoint sets no_new_privs before summa-worker starts (setpriv, from
# util-linux, in every Debian base), so a Swarm replica gets it too, where a service cannot
# ask the engine for it.
FROM ${BASE_IMAGE}
COPY --from=build /opt/summa /opt/summa
RUN set -eu; command -v setpriv >/dev/null; \
    echo "summa:x:10001:" >> /etc/group; \
    echo "summa:x:10001:10001:summa worker:/nonexistent:/usr/sbin/nologin" >> /etc/passwd
ENV PATH=/opt/summa/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 4000
ENTRYPOINT ["setpriv", "--no-new-privs", "--", "summa-worker"]

# The worker image: the package with its compiled kernel, started as summa-worker.
#   docker build . -t summa-aggregation
# Machines without access to a public registry can build on a local base image:
#   docker build --build-arg BASE_IMAGE=my-debian-python . -t summa-aggregation
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# A C compiler and the Python headers build the Cython kernel; the venv keeps pip away from
# the system Python of Debian-based bases.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev python3-dev python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/summa
ENV PATH=/opt/summa/bin:$PATH

WORKDIR /src
COPY pyproject.toml setup.py setup.cfg README.md ./
COPY cython_ext ./cython_ext
COPY worker ./worker
COPY daemon ./daemon
RUN pip install --no-cache-dir . && rm -rf /src

WORKDIR /
EXPOSE 4000
ENTRYPOINT ["summa-worker"]

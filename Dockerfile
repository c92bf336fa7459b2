# One image, two binaries: `media-worker` (the default command) and `media-api`.
#
#   docker build -t media-worker .
#   docker run --env-file .env media-worker                              # the worker daemon
#   docker run --env-file .env -p 8080:8080 media-worker media-api       # the HTTP API
#
# Give the worker time to drain on stop: `docker stop -t 120` (docker's default is 10 s; on ECS
# the task definition's stopTimeout does this). `--build-arg BINARIES=media-worker` builds a
# worker-only image.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# --- Build -----------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
ARG BINARIES="media-worker media-api"
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
WORKDIR /src

# libvmaf (VMAF scoring, linked statically through the vmaf-head-sys crate) is built from its
# vendored C/C++ source with meson and ninja, its x86 kernels with nasm, its built-in models with
# xxd (scripts/lib.sh's ensure_build_tools installs the same outside docker).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ meson nasm ninja-build xxd \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first, with stub sources at every target path Cargo.toml names: this layer is
# rebuilt only when Cargo.toml or Cargo.lock change, not on every source edit.
COPY Cargo.toml Cargo.lock ./
RUN set -eu; \
    for path in src/main.rs src/lib.rs $(sed -n 's/^path *= *"\(.*\)"/\1/p' Cargo.toml); do \
        mkdir -p "$(dirname "$path")"; \
        [ -e "$path" ] || echo 'fn main() {}' > "$path"; \
    done; \
    cargo build --release --locked; \
    rm -rf src

# Then the crate itself. The sources are touched so cargo sees them as newer than the stubs
# (COPY keeps the build context's modification times, which may be older).
COPY src ./src
RUN set -eu; \
    find src -type f -exec touch {} +; \
    cargo build --release --locked --bins; \
    mkdir -p /out; \
    for bin in $BINARIES; do install -m 0755 "target/release/$bin" /out/; done

# --- Runtime ---------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# ffmpeg/ffprobe for the transcodes, CA roots for TLS to AWS, tini as PID 1 (forwards SIGTERM
# to the binary and reaps orphans). Versions are not pinned: the release's security updates
# are wanted, and Debian stable does not change package behaviour within a release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates ffmpeg tini \
    && rm -rf /var/lib/apt/lists/*

# An unprivileged user owning the scratch folder. Both writable folders are VOLUMEs: ECS (Fargate
# bind mounts) and docker then give them the image's owner and mode (scratch: the user; /tmp:
# 1777), they live on the task's ephemeral storage, and the root filesystem can be read-only.
RUN groupadd --system --gid 10001 media \
    && useradd --system --uid 10001 --gid media --no-create-home \
        --home-dir /var/lib/media-worker --shell /usr/sbin/nologin media \
    && mkdir -p /var/lib/media-worker \
    && chown media:media /var/lib/media-worker
VOLUME ["/var/lib/media-worker", "/tmp"]

COPY --from=build /out/ /usr/local/bin/
# The notices of what the binaries link (libvmaf's BSD-2-Clause-Patent asks for its notice).
COPY licenses/ /usr/share/doc/media-worker/
COPY infra/docker/healthcheck /usr/local/bin/healthcheck

ENV MEDIA_WORK_DIR=/var/lib/media-worker \
    MEDIA_API_ADDR=0.0.0.0:8080 \
    MEDIA_METRICS_ADDR=0.0.0.0:9090
WORKDIR /var/lib/media-worker
USER 10001:10001
EXPOSE 8080 9090

# For plain docker: asks GET /healthz of whichever binary runs (ECS and the load balancer use
# their own checks, set in infra/service.yaml).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["/usr/local/bin/healthcheck"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["media-worker", "run"]

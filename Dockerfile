# syntax=docker/dockerfile:1
#
# zedi-sync container image (ops/README.md: how it is built, pushed and run on ECS Fargate).
#
#   docker build -t zedi-sync .
#   docker run --rm -p 1234:1234 zedi-sync                       # laptop: embedded store, auth off
#   docker run --rm -p 1234:1234 -e DATABASE_URL=... -e JWT_SECRET=... zedi-sync
#
# Configuration is environment only (config/default.toml is compiled into the binary):
# PORT, DATABASE_URL, REDIS_URL, JWT_SECRET, COGNITO_USER_POOL_ID, COGNITO_REGION, ALLOWED_ORIGINS
# and ZEDI__<SECTION>__<KEY> for every key of config/default.toml.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---- builder ----------------------------------------------------------------------------------
# The Rust image brings gcc and make, which the C parts of the dependencies need (bundled
# SQLite, ring, aws-lc; jemalloc, the daemon's allocator, runs its configure script and make);
# no cmake, clang or OpenSSL is required.
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /build

# 1. Dependencies only. This layer is rebuilt only when Cargo.toml or Cargo.lock change: the
#    crate's own code is replaced by empty stubs, so every dependency is compiled and cached here
#    (vendor/ too: it changes only with a yrs fix).
#    The workspace's other members (crates/) get stubs as well, and so does every target
#    Cargo.toml declares (the benchmark), since cargo reads the whole workspace to build one bin.
COPY Cargo.toml Cargo.lock ./
COPY crates/zedi-protocol/Cargo.toml ./crates/zedi-protocol/
COPY crates/zedi-bench/Cargo.toml ./crates/zedi-bench/
# yrs with our hostile-input fixes ([patch.crates-io] in Cargo.toml, vendor/yrs/PATCHES.md).
COPY vendor ./vendor
RUN mkdir -p src benches crates/zedi-protocol/src crates/zedi-bench/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs crates/zedi-protocol/src/lib.rs \
    && echo 'fn main() {}' > benches/hot_paths.rs \
    && echo 'fn main() {}' > crates/zedi-bench/src/main.rs \
    && cargo build --release --locked --bin zedi-sync \
    && rm -rf src benches crates/zedi-protocol/src crates/zedi-bench/src

# 2. The crates themselves. COPY keeps the build context's file times, which can be older than
#    the stub build above: touching the crate roots makes cargo rebuild them (and only them).
COPY config ./config
COPY crates ./crates
COPY src ./src
COPY benches ./benches
RUN touch src/main.rs src/lib.rs crates/zedi-protocol/src/lib.rs \
    && cargo build --release --locked --bin zedi-sync \
    && strip --strip-debug target/release/zedi-sync \
    && install -m 0755 target/release/zedi-sync /usr/local/bin/zedi-sync \
    && /usr/local/bin/zedi-sync check-config > /dev/null

# ---- runtime ----------------------------------------------------------------------------------
# The binary links only glibc and libgcc (TLS is rustls, SQLite and jemalloc are compiled in). ca-certificates
# is the one package it needs at run time: HTTPS to Cognito's JWKS endpoint and the CloudWatch API.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# Unpinned on purpose: the bookworm security archive replaces ca-certificates versions, so a pin
# would break rebuilds; the base image tag already fixes the Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 zedi \
    && useradd --system --uid 10001 --gid zedi --no-create-home \
        --home-dir /var/lib/zedi-sync --shell /usr/sbin/nologin zedi \
    && mkdir -p /var/lib/zedi-sync/data \
    && chown -R zedi:zedi /var/lib/zedi-sync

COPY --from=builder /usr/local/bin/zedi-sync /usr/local/bin/zedi-sync

WORKDIR /var/lib/zedi-sync
# PORT is config `server.port` (default 1234), kept explicit so EXPOSE, the HEALTHCHECK (which
# reads the same environment) and the ECS task definition agree. The embedded store (used only
# without DATABASE_URL) lives in the one writable directory; on ECS the root filesystem is
# read-only and the PostgreSQL store is forced (ZEDI__STORE__KIND=postgres).
ENV PORT=1234 \
    ZEDI__STORE__PATH=/var/lib/zedi-sync/data/zedi-sync.db

# Numeric uid:gid so orchestrators can verify "runs as non-root" without reading /etc/passwd.
USER 10001:10001
EXPOSE 1234

# `zedi-sync healthcheck` GETs http://127.0.0.1:$PORT/health and exits 0 on 200, 1 otherwise
# (503 while draining), so the image needs no curl. ECS ignores this instruction: the task
# definition repeats it as the container healthCheck (ops/terraform/modules/realtime).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/zedi-sync", "healthcheck"]

# SIGTERM (Docker's and ECS's default stop signal) starts the graceful drain; the binary is PID 1
# and handles it itself.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/zedi-sync"]
CMD ["run"]

# Ringtail image, built from source:
#
#     docker build -t ringtail:local .
#
# One image for every role: pick it with `--target` / RINGTAIL_TARGET (see README
# "Run roles as separate processes" and docker-compose.yml). Without access to a
# registry, scripts/build-image.sh builds an equivalent image from a host-built binary.

# ---- build ------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src

# Dependencies first, so that a source change does not download the crates again.
# Cargo needs every declared target to exist to read the manifest: stub them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs benches/split.rs \
    && cargo fetch --locked \
    && rm -rf src benches

# build.rs generates the internal RPC from proto/ with protox (no protoc needed).
COPY build.rs ./
COPY proto proto
COPY benches benches
COPY src src
RUN cargo build --release --locked --bin ringtail \
    && cp target/release/ringtail /usr/local/bin/ringtail

# ---- runtime ----------------------------------------------------------------------
FROM debian:bookworm-slim

# CA certificates for an S3 store over https; nothing else is needed at run time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric user: volume ownership does not depend on the image's /etc/passwd.
# data/ holds the WAL and local blocks (data_dir), blocks/ the filesystem object
# store (storage_path; mount one volume shared by every node there). Both exist in
# the image owned by the user, so a named volume mounted on them starts writable.
RUN groupadd --system --gid 10001 ringtail \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/ringtail --shell /usr/sbin/nologin ringtail \
    && mkdir -p /var/lib/ringtail/data /var/lib/ringtail/blocks \
    && chown -R 10001:10001 /var/lib/ringtail

COPY --from=build /usr/local/bin/ringtail /usr/local/bin/ringtail

USER 10001:10001
WORKDIR /var/lib/ringtail
ENV RINGTAIL_DATA_DIR=/var/lib/ringtail/data \
    RINGTAIL_STORAGE_PATH=/var/lib/ringtail/blocks

# 3200 admin + query API, 4317 OTLP/gRPC, 4318 OTLP/HTTP, 9095 internal gRPC, 7946 gossip.
EXPOSE 3200 4317 4318 9095 7946/udp

# The binary probes itself (GET /ready on the http_listen port); no curl in the image.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["ringtail", "healthcheck"]

# SIGTERM runs the shutdown sequence (drain, flush, leave), bounded by
# shutdown_timeout_ms (default 60 s): give `docker stop -t` / stop_grace_period /
# terminationGracePeriodSeconds more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["ringtail"]

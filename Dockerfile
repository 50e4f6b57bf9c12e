# syntax=docker/dockerfile:1
# Multi-stage build of the one `inlet` binary (api, worker, sync, migrate,
# keys, push, load).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p inlet \
 && cp target/release/inlet /usr/local/bin/inlet

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/inlet /usr/local/bin/inlet
COPY config /etc/inlet/config
ENV INLET_CONFIG_DIR=/etc/inlet/config \
    INLET_ENV=production
# Relative paths in the configuration (`auth.key_file = "config/keys.toml"`)
# resolve against this directory: /etc/inlet/config/keys.toml.
WORKDIR /etc/inlet
USER 65532:65532
ENTRYPOINT ["inlet"]
CMD ["--help"]

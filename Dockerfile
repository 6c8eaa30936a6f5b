# syntax=docker/dockerfile:1
#
# The `sessionbus` image: the CLI (`sessionbus worker`, `sessionbus exporter`,
# `sessionbus status`, ...). Used by docker-compose.yml and deploy/k8s/.
#
#   docker build -t sessionbus:latest .
#
# The image does not contain nats-server: it runs against a NATS cluster given by
# NATS_URL (`sessionbus up` with an embedded server is for a developer's machine).

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sessionbus-cli \
    && install -m 0755 target/release/sessionbus /usr/local/bin/sessionbus

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin sessionbus
COPY --from=builder /usr/local/bin/sessionbus /usr/local/bin/sessionbus
USER 10001
ENTRYPOINT ["sessionbus"]
CMD ["worker"]

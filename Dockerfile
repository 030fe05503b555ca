# mssql-mcp in a container: a multi-stage build (the Rust toolchain stays in the build stage),
# a small Debian runtime, a non-root user, state on a volume, and a health check against the
# loopback-only admin listener (it answers whatever TLS mode the public listener uses).
#
#   docker build -t mssql-mcp .
#   docker run -d --stop-timeout 20 -p 443:443 -p 80:80 \
#     -v mssql-mcp-state:/var/lib/mssql-mcp -v /etc/mssql-mcp:/etc/mssql-mcp:ro mssql-mcp
#
# --stop-timeout 20: on `docker stop` the server drains for up to server.shutdown_grace_secs
# (10 s by default) and then flushes the audit log (up to 5 s); Docker's default of 10 s would
# kill it mid-flush. Keep the timeout above the grace plus 5 s.
#
# The config must listen on 0.0.0.0:443 (state_dir = "/var/lib/mssql-mcp", [admin] listen on
# 127.0.0.1:8009, the default). Binding 443 as non-root works because Docker's default
# net.ipv4.ip_unprivileged_port_start is 0 inside the container.

# The toolchain the project is built and tested with (Cargo.toml's rust-version).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config.toml.example ./
RUN cargo build --release --locked \
    && strip target/release/mssql-mcp

FROM debian:bookworm-slim
# ca-certificates: ACME and SQL Server TLS; curl: the health check.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/mssql-mcp mssql-mcp \
    && mkdir -p /var/lib/mssql-mcp /etc/mssql-mcp \
    && chown 10001:10001 /var/lib/mssql-mcp \
    && chmod 0700 /var/lib/mssql-mcp
COPY --from=build /src/target/release/mssql-mcp /usr/local/bin/mssql-mcp
COPY config.toml.example /etc/mssql-mcp/config.toml.example
USER 10001:10001
VOLUME ["/var/lib/mssql-mcp"]
EXPOSE 443 80
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8009/health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/mssql-mcp"]
CMD ["serve", "--config", "/etc/mssql-mcp/config.toml"]

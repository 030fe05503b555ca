# Multi-stage build: compile with the Rust toolchain, run on a small Debian base as non-root.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config.toml.example ./
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/mssql-mcp mssql-mcp \
    && mkdir -p /var/lib/mssql-mcp && chown mssql-mcp /var/lib/mssql-mcp
COPY --from=build /src/target/release/mssql-mcp /usr/local/bin/mssql-mcp
USER mssql-mcp
VOLUME ["/var/lib/mssql-mcp"]
EXPOSE 443 80 8008
HEALTHCHECK --interval=30s --timeout=3s CMD curl -fsS http://127.0.0.1:8008/health || exit 1
ENTRYPOINT ["/usr/local/bin/mssql-mcp"]
CMD ["serve", "--config", "/etc/mssql-mcp/config.toml"]

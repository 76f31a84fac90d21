# syntax=docker/dockerfile:1
# Multi-stage build of callbot-facade: a dependency layer that only changes with Cargo.toml/Cargo.lock,
# then the crate, then a distroless non-root runtime with no shell.

FROM rust:1-bookworm AS build
WORKDIR /src
# 1. Dependencies only: build a placeholder crate with the real manifests so this layer is cached.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
RUN mkdir -p src && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/deps/callbot_facade* target/release/callbot-facade* target/release/.fingerprint/callbot-facade-*
# 2. The crate itself.
COPY src ./src
RUN cargo build --release --locked && cp target/release/callbot-facade /callbot-facade

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /callbot-facade /usr/local/bin/callbot-facade
# nonroot:nonroot of the distroless image, numeric so that runAsNonRoot can verify it without /etc/passwd
USER 65532:65532
EXPOSE 50051 9090
ENV CALLBOT_LISTEN=0.0.0.0:50051 \
    CALLBOT_ADMIN_LISTEN=0.0.0.0:9090 \
    CALLBOT_LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/callbot-facade"]
CMD ["serve"]

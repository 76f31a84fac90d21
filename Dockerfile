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
# 3. The data dir (--data-dir): the runtime has no shell to make it, runs as non-root in `/`, where
#    ./callbot-data cannot be created. Made here, owned by the runtime's user, copied over.
RUN mkdir -p /var/lib/callbot && chown 65532:65532 /var/lib/callbot && chmod 0700 /var/lib/callbot

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /callbot-facade /usr/local/bin/callbot-facade
# Mount a volume here to keep the disk event store across containers (docs/operations.md, "The data dir").
COPY --from=build --chown=65532:65532 /var/lib/callbot /var/lib/callbot
# nonroot:nonroot of the distroless image, numeric so that runAsNonRoot can verify it without /etc/passwd
USER 65532:65532
EXPOSE 50051 9090
ENV CALLBOT_LISTEN=0.0.0.0:50051 \
    CALLBOT_ADMIN_LISTEN=0.0.0.0:9090 \
    CALLBOT_LOG_FORMAT=json \
    CALLBOT_DATA_DIR=/var/lib/callbot
ENTRYPOINT ["/usr/local/bin/callbot-facade"]
CMD ["serve"]

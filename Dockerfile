# Worker image for ComputeMode=ecs. No configuration inside: the stack sets
# KEYTURN_CONFIG=ssm:<ConfigParameterName> and the worker reads it from SSM
# Parameter Store (new versions are picked up without a redeploy).
#   docker build -t keyturn .
# Not built in CI (no container engine on the CI machines).
#
# Base images are pinned to exact version tags here. Tags can be re-pushed;
# pin them by digest before building a release image (docs/security.md,
# "Supply chain"): resolve each tag once with
#   docker buildx imagetools inspect rust:1.95.0-bookworm --format '{{json .Manifest.Digest}}'
# and write it as FROM rust:1.95.0-bookworm@sha256:<digest> (the same for
# debian:bookworm-20251117-slim). No digest is written here that was not
# resolved from the registry.
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
# --locked: exactly the dependency versions of Cargo.lock, or fail.
RUN cargo build --locked --release -p keyturn --bin keyturn

FROM debian:bookworm-20251117-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/keyturn /usr/local/bin/keyturn
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/keyturn"]
CMD ["worker"]

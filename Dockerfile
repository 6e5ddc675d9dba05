# Worker image for ComputeMode=ecs. No configuration inside: the stack sets
# KEYTURN_CONFIG=ssm:<ConfigParameterName> and the worker reads it from SSM
# Parameter Store (new versions are picked up without a redeploy).
#   docker build -t keyturn .
# Not built in CI (no container engine on the CI machines).
#
# The build image is pinned to the exact toolchain tag; debian:bookworm-slim
# is a moving tag (security updates). Tags can be re-pushed: pin both by
# digest before building a release image (docs/security.md, "The stack"):
#   docker buildx imagetools inspect rust:1.95.0-bookworm --format '{{json .Manifest.Digest}}'
# then FROM rust:1.95.0-bookworm@sha256:<digest> (the same for the runtime
# image). No digest is written here that was not resolved from the registry,
# and this machine cannot reach one.
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
# --locked: exactly the dependency versions of Cargo.lock, or fail.
RUN cargo build --locked --release -p keyturn --bin keyturn

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/keyturn /usr/local/bin/keyturn
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/keyturn"]
CMD ["worker"]

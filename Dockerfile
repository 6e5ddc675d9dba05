# Worker image for ComputeMode=ecs. No configuration inside: the stack sets
# KEYTURN_CONFIG=ssm:<ConfigParameterName> and the worker reads it from SSM
# Parameter Store (new versions are picked up without a redeploy).
#   docker build -t keyturn .
# Not built in CI (no container engine on the CI machines).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p keyturn --bin keyturn

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/keyturn /usr/local/bin/keyturn
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/keyturn"]
CMD ["worker"]

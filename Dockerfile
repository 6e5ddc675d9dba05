# Worker image for ComputeMode=ecs. The configuration is baked in at
# /etc/keyturn/keyturn.toml (secrets stay references: { secrets_manager = ... }).
#   docker build -t keyturn --build-arg CONFIG=keyturn.toml .
# Not built in CI (no container engine on the CI machines).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p keyturn --bin keyturn

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
ARG CONFIG=keyturn.toml
COPY --from=build /src/target/release/keyturn /usr/local/bin/keyturn
COPY ${CONFIG} /etc/keyturn/keyturn.toml
USER 65532:65532
ENV KEYTURN_CONFIG=/etc/keyturn/keyturn.toml
ENTRYPOINT ["/usr/local/bin/keyturn"]
CMD ["worker"]

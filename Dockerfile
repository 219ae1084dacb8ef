# The connector images: one static binary on an empty base, nothing else. Two images come
# from this file, one per connector of the crate, as build targets (stages):
#   source-postgres        the CDC connector (the last stage: the default target)
#   source-postgres-batch  the batch (polling) connector, for servers without logical replication
#
# Build them with scripts/build-image.sh [--connector source-postgres-batch]. That script first
# stages statically linked binaries and the CA bundle under target/image/ (the only part of the
# repository that .dockerignore admits into the build context), then builds this file with
# buildah, which needs no container engine. Any other builder works on the same staged context:
#   scripts/build-image.sh --stage-only &&
#   docker build --platform linux/amd64 --target source-postgres-batch -t source-postgres-batch .
#
# Two images rather than one image with two entrypoints: the Flow runtime runs an image's
# ENTRYPOINT with no arguments, so each connector needs an image whose entrypoint is its own.

FROM scratch AS source-postgres-batch

# Flow reads these to know the image is a capture connector speaking newline-delimited JSON.
LABEL FLOW_RUNTIME_PROTOCOL=capture
LABEL FLOW_RUNTIME_CODEC=json
LABEL org.opencontainers.image.title="source-postgres-batch" \
      org.opencontainers.image.description="PostgreSQL batch (polling) capture connector for the Flow capture protocol: tables, views and queries, without logical replication" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY target/image/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY target/image/source-postgres-batch /connector/source-postgres-batch

ENTRYPOINT ["/connector/source-postgres-batch"]

FROM scratch AS source-postgres

# Flow reads these to know the image is a capture connector speaking newline-delimited JSON.
LABEL FLOW_RUNTIME_PROTOCOL=capture
LABEL FLOW_RUNTIME_CODEC=json
LABEL org.opencontainers.image.title="source-postgres" \
      org.opencontainers.image.description="PostgreSQL change-data-capture connector for the Flow capture protocol" \
      org.opencontainers.image.licenses="Apache-2.0"

# The binary embeds its own TLS roots; the system bundle is here for tools and libraries that
# look for it at the conventional path.
COPY target/image/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY target/image/source-postgres /connector/source-postgres

# The runtime runs the entrypoint with no arguments and speaks the protocol over stdin/stdout.
ENTRYPOINT ["/connector/source-postgres"]

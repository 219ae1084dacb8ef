# The connector image: one static binary on an empty base, nothing else.
#
# Build it with scripts/build-image.sh. That script first stages a statically linked binary and
# the CA bundle under target/image/ (the only part of the repository that .dockerignore admits
# into the build context), then builds this file with buildah, which needs no container engine.
# Any other builder works on the same staged context, for example
#   scripts/build-image.sh --stage-only && docker build --platform linux/amd64 -t source-postgres .
FROM scratch

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

# syntax=docker/dockerfile:1
#
# The bifrost-requirements image. One image serves two roles:
#   - the operator (`bifrost-requirements operator`, the default command);
#   - the bootstrap init container the webhook injects into worker pods, which runs
#     `/usr/local/bin/bifrost-requirements bootstrap --to DIR` to copy the binary and `uv` (found
#     next to it, /usr/local/bin/uv) into a shared volume. Both are static, so they run in any
#     worker image (glibc or musl) with the worker's own python3.
#
# The build itself is scripts/build-static.sh, which CI runs too (scripts/test.sh), so this file
# cannot rot unnoticed on machines without a container engine:
#   docker build -t bifrost-requirements:0.1.0 .

ARG RUST_VERSION=1.95
ARG PYTHON_VERSION=3.12

# --- static (musl) binary --------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-bookworm AS build
# musl-tools: ring's C and assembly need musl-gcc; file: the script checks the result is static.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 file=1:5.44-3 \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
COPY deploy ./deploy
COPY migrations ./migrations
COPY src ./src
COPY scripts/build-static.sh ./scripts/
# Cache mounts keep cargo's registry and target/ between builds; the result is copied out.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/build-static.sh binary \
 && install -D -m 0755 target/static/bifrost-requirements /out/bifrost-requirements

# --- static uv ---------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS uv
RUN apt-get update \
 && apt-get install -y --no-install-recommends file=1:5.44-3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY scripts/build-static.sh ./scripts/
RUN scripts/build-static.sh uv \
 && install -D -m 0755 target/static/uv /out/uv

# --- final image: static binaries and the python3 uv queries, non-root --------------------------
# The controller resolves each requirements.txt with `uv pip compile --no-build`: uv runs no
# package code then, but it still asks an interpreter for its environment, so the image carries
# distroless's python3 (the worker pods get only the two static binaries, never this python3).
FROM gcr.io/distroless/python3-debian12:nonroot
LABEL org.opencontainers.image.title="bifrost-requirements" \
      org.opencontainers.image.description="Kubernetes operator that makes Python packages installed in Bifrost survive container restarts" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/bifrost-requirements /usr/local/bin/bifrost-requirements
COPY --from=uv /out/uv /usr/local/bin/uv
# 65532 = distroless "nonroot"; the chart's securityContext runs as the same uid.
USER 65532:65532
# 8080: /metrics, /healthz, /readyz (HTTP); 8443: admission webhook (HTTPS).
EXPOSE 8080 8443
ENTRYPOINT ["/usr/local/bin/bifrost-requirements"]
CMD ["operator"]

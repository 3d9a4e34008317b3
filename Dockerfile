# syntax=docker/dockerfile:1.7
# One image per app of the shop, all from this file:
#
#   docker build --build-arg APP=auth --build-arg PORT=5001 -t shop-auth .
#
# APP is the directory under apps/ (the package is shop-$APP, the binary too), PORT the port the
# app listens on (docs/deploy.md and k8s/ list them). Stages:
#   chef     the Rust toolchain with cargo-chef
#   planner  reduces the workspace to a recipe of its dependencies
#   builder  compiles the dependencies (a layer cached until Cargo.lock or a manifest changes),
#            then the app, with the same command CI uses: cargo build --release --locked -p shop-$APP
#   runtime  distroless (glibc, CA certificates, no shell), user 65532, the binary and a static
#            busybox for the container HEALTHCHECK; Kubernetes probes the same endpoints itself.

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN} AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ARG APP=gateway
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: this layer is rebuilt when the recipe (manifests, Cargo.lock) changes.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo chef cook --release --locked -p "shop-${APP}" --recipe-path recipe.json
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo build --release --locked -p "shop-${APP}" \
    && install -D -m 0755 "target/release/shop-${APP}" /out/app

FROM busybox:1.37-musl AS busybox

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG APP=gateway
ARG PORT=8080
LABEL org.opencontainers.image.source="https://github.com/dapr-shop/shop" \
      org.opencontainers.image.title="shop-${APP}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=busybox /bin/busybox /usr/local/bin/busybox
COPY --from=builder /out/app /usr/local/bin/app
# kit reads APP_PORT as app.port; the HEALTHCHECK uses it too. SHOP_APP names the app in logs of
# the image itself; the app's own settings keep their SHOP_<APP>_ prefix.
ENV APP_PORT=${PORT} \
    SHOP_APP=${APP}
USER 65532:65532
EXPOSE ${PORT}
# /healthz answers 204 once the app serves (it waits for its sidecar first; hence start-period).
HEALTHCHECK --interval=10s --timeout=2s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/busybox", "sh", "-c", "/usr/local/bin/busybox wget -q -O /dev/null http://127.0.0.1:${APP_PORT}/healthz"]
# SIGTERM starts the graceful drain (app.drain_seconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/app"]

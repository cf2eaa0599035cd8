# The projected-token image: one static binary on an empty base (FROM scratch), run as an
# unprivileged user. Two ways to build it, ending in the same kind of image:
#
# No registry (our machines: nothing can be pulled): build the static binary on the host, then
# the `local` target, which copies it in. scripts/build-image.sh does both:
#     scripts/build-static.sh && docker build --target local -t projected-token .
#
# With a registry: the default (last) target builds from source in a Rust image:
#     docker build -t projected-token .
#     docker build --build-arg RUST_IMAGE=rust:1.95-bookworm -t projected-token .

ARG RUST_IMAGE=rust:1-bookworm

# What every variant shares: no files yet, only the image's configuration.
FROM scratch AS base
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="projected-token" \
      org.opencontainers.image.description="Kubelet-style projected service account tokens anywhere: emulator, sidecar, reload tests" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/usr/local/bin
# distroless's "nonroot" uid; no passwd file is needed to run as it.
USER 65532:65532
ENTRYPOINT ["projected-token"]
CMD ["--help"]

# The binary and directories prepared on the host by scripts/build-static.sh:
# /tmp (mode 1777) and /projected (owned by 65532, so a new named volume mounted there, which
# takes the ownership of the image's directory, is writable by the emulator or sidecar).
FROM base AS local
COPY target/image/rootfs/ /
COPY --chown=65532:65532 target/image/projected/ /projected/

# From source, for builders that can pull a Rust image (BuildKit builds only this path's stages
# when it is the target; the legacy builder builds every stage before the target, so `local`
# comes first and needs no pull).
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN scripts/build-static.sh \
 && mkdir -p /rootfs/projected \
 && cp -a target/image/rootfs/. /rootfs/ \
 && chown 65532:65532 /rootfs/projected

FROM base AS image
COPY --from=build /rootfs/ /

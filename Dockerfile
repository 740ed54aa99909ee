# berth's container image: berth, the libraries it links and CA certificates on
# an empty base (no shell, no package manager), run as the unprivileged user
# berth (10001) in /var/lib/berth, where it keeps data/, keys/ and policies/.
# It runs with a read-only root filesystem; mount a volume on /var/lib/berth
# (or point BERTH_DATABASE, BERTH_KEYS_DIR and BERTH_POLICIES_DIR elsewhere).
#
#   docker build -t berth .                 compiles berth in the rust image
#   scripts/build-image.sh                  uses a berth built on this machine
#                                           (no base image is pulled)
#
# Both end in the same final stage. scripts/build-image.sh selects the
# `prebuilt` stage with --build-arg ROOTFS=prebuilt; BuildKit then never
# touches the `build` stage.
ARG ROOTFS=build

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin berth \
 && scripts/image-rootfs.sh target/release/berth /image

FROM scratch AS prebuilt
COPY target/image/ /image/

FROM ${ROOTFS} AS rootfs

FROM scratch
COPY --from=rootfs /image/rootfs/ /
COPY --from=rootfs --chown=10001:10001 /image/home/ /var/lib/berth/
USER 10001:10001
WORKDIR /var/lib/berth
# Inside a container berth listens on every interface; publish the port you need.
ENV BERTH_LISTEN=0.0.0.0:5001
EXPOSE 5001 9101
ENTRYPOINT ["/usr/local/bin/berth"]
CMD ["serve"]

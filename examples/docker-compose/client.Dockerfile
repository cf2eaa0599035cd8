# The docker-compose example's app: examples/token_client.rs, static, on an empty base.
# Built from the repository root after scripts/build-static.sh (scripts/build-image.sh does it):
#     docker build -f examples/docker-compose/client.Dockerfile -t projected-token-example-client .
FROM scratch
COPY target/image/client/ /
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/token-client"]

# Lathe on Debian 12: the server, the worker agent, the training child and the
# CLI in one image, serving with one local worker. It listens on the
# container's loopback only unless it is given TLS (--tls-cert/--tls-key, files
# mounted into the container; see docs/security.md) or --insecure. Use it from
# inside the container (`docker exec CONTAINER lathe --token-file
# /var/lib/lathe/admin.token ...`: the first start writes the admin's token to
# the data volume), or serve TLS:
#   docker run -p 50051:50051 -v /etc/lathe/tls:/tls:ro IMAGE \
#     --listen 0.0.0.0:50051 --tls-cert /tls/server.pem \
#     --tls-key /tls/server.key --local-workers 1
# or, on a machine you trust, publish it to the host's loopback only:
#   docker run -p 127.0.0.1:50051:50051 IMAGE \
#     --listen 0.0.0.0:50051 --insecure --local-workers 1
FROM debian:12 AS build
WORKDIR /src
COPY . .
RUN ./run build

FROM debian:12
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libtorch1.13 libopenblas0-openmp libgrpc++1.51 libprotobuf32 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libsqlite3-0 libutf8proc2 \
      libabsl20220623 libpng16-16 libjpeg62-turbo libarchive13 libcurl4 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/bin/ /opt/lathe/bin/
COPY --from=build /src/build/assets/bert-base-uncased /opt/lathe/assets/bert-base-uncased
ENV PATH=/opt/lathe/bin:$PATH
VOLUME /var/lib/lathe
EXPOSE 50051 9464
ENTRYPOINT ["lathe-server", "--data-dir", "/var/lib/lathe"]
CMD ["--local-workers", "1"]

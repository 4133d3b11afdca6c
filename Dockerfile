# Lathe on Debian 12: the server, the worker agent, the training child and the
# CLI in one image. `docker run -p 50051:50051 IMAGE` serves with one local
# worker; the server listens on all interfaces inside the container only.
FROM debian:12 AS build
WORKDIR /src
COPY . .
RUN ./run build

FROM debian:12
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libtorch1.13 libopenblas0-openmp libgrpc++1.51 libprotobuf32 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libsqlite3-0 libutf8proc2 \
      libabsl20220623 libpng16-16 libjpeg62-turbo ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/bin/ /opt/lathe/bin/
COPY --from=build /src/build/assets/bert-base-uncased /opt/lathe/assets/bert-base-uncased
ENV PATH=/opt/lathe/bin:$PATH
VOLUME /var/lib/lathe
EXPOSE 50051 9464
ENTRYPOINT ["lathe-server", "--listen", "0.0.0.0:50051", "--metrics-listen", "0.0.0.0:9464", "--data-dir", "/var/lib/lathe"]
CMD ["--local-workers", "1"]

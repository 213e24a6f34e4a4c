# semid container image.
#
# Stage 1 builds and runs the whole test suite on Debian 12 (the same packages
# `make deps` installs); stage 2 is a slim runtime with only the shared
# libraries the programs link, running as a non-root user.
#
#   docker build -t semid .
#   docker run -p 8080:8080 -v semid-models:/var/lib/semid/models semid
#
# A named volume takes the image's owner (uid 10001).  A host directory
# mounted instead keeps its own owner: chown it to 10001 first, or the ID
# registry (a SQLite file beside the model) cannot be created and every
# assign answers 503.
FROM debian:12 AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config libopenblas-dev \
	libjansson-dev libmicrohttpd-dev libuv1-dev libsqlite3-dev libpq-dev check libsubunit-dev \
	python3 python3-numpy python3-yaml postgresql wrk curl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make clean && make -j"$(nproc)" WERROR=1 && make test WERROR=1

FROM debian:12-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libopenblas0-pthread libjansson4 libmicrohttpd12 \
	libuv1 libsqlite3-0 libpq5 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/semid --shell /usr/sbin/nologin semid \
 && mkdir -p /var/lib/semid/models /etc/semid \
 && chown -R semid:semid /var/lib/semid
COPY --from=build /src/bin/ /usr/local/bin/
COPY --from=build /src/config/semid-server.json /etc/semid/semid-server.json
USER semid
WORKDIR /var/lib/semid
EXPOSE 8080
VOLUME ["/var/lib/semid/models"]
ENTRYPOINT ["/usr/local/bin/semid-server"]
CMD ["--config", "/etc/semid/semid-server.json", \
     "--model", "/var/lib/semid/models/model.safetensors", \
     "--listen", "0.0.0.0:8080", "--allow-empty"]

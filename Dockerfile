# semid container image.
#
# Stage 1 builds and runs the whole test suite on Debian 12 (the packages
# `make deps-test` installs); stage 2 is a slim runtime with only the shared
# libraries the programs link, running as a non-root user.
#
#   docker build -t semid .
#   docker run --stop-timeout 20 -p 8080:8080 -p 9090:9090 -v semid-models:/var/lib/semid/models semid
#
# `docker stop` sends SIGTERM to the server (PID 1, which handles it): it
# drains in-flight requests for up to shutdown_timeout_ms (10 s) and exits.
# Docker's own grace is 10 s too, after which it sends SIGKILL, so give it
# more (--stop-timeout, or `docker stop -t 20`), as the systemd unit and the
# Kubernetes Deployment do.  The health check is liveness (/healthz: the
# process answers); readiness, a model loaded, is /readyz.  Both, and
# /metrics, are asked on the operations port, 9090 (--ops-listen), whose
# connections the clients of 8080 cannot take: a server whose clients hold
# every one of connection_limit answers 503 on 8080, and is busy, not
# unhealthy.  The runtime image has no curl, so the check speaks HTTP
# through bash's /dev/tcp.
#
# It serves with config/semid-server.json (workers 0: one per CPU the
# container may use, a --cpus quota included).  Arguments
# after the image name replace CMD below, not add to it: to change a key,
# give CMD's five with it, e.g. `... semid --config /etc/semid/semid-server.json
# --model /var/lib/semid/models/model.safetensors --listen 0.0.0.0:8080
# --ops-listen 0.0.0.0:9090 --allow-empty --workers 8`.
#
# A named volume takes the image's owner (uid and gid 10001, as the
# Kubernetes pods run).  A host directory mounted instead keeps its own
# owner: chown it to 10001:10001 first, or the ID
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
 && groupadd --system --gid 10001 semid \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/semid --shell /usr/sbin/nologin \
	semid \
 && mkdir -p /var/lib/semid/models /etc/semid \
 && chown -R semid:semid /var/lib/semid
COPY --from=build /src/bin/ /usr/local/bin/
COPY --from=build /src/config/semid-server.json /etc/semid/semid-server.json
USER semid
WORKDIR /var/lib/semid
EXPOSE 8080 9090
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
	CMD bash -c 'exec 3<>/dev/tcp/127.0.0.1/9090 && printf "GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3 && IFS= read -r -t 3 status <&3 && [[ $status == "HTTP/1."[01]" 200 "* ]]'
VOLUME ["/var/lib/semid/models"]
ENTRYPOINT ["/usr/local/bin/semid-server"]
CMD ["--config", "/etc/semid/semid-server.json", \
     "--model", "/var/lib/semid/models/model.safetensors", \
     "--listen", "0.0.0.0:8080", "--ops-listen", "0.0.0.0:9090", "--allow-empty"]

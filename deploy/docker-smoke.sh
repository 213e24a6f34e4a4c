#!/usr/bin/env bash
# deploy/docker-smoke.sh [IMAGE]: check a semid image (default `semid`, as
# built by `docker build -t semid .`) the way the Dockerfile says it is run.
# It starts the image with a fresh named volume, then checks in turn:
#   - the server runs as uid 10001 and answers /healthz on the operations
#     port, and /readyz says 503 while no model is published;
#   - a model trained by semid-train in a second container of the image, as
#     its user, into the volume, is picked up (watch) and served: /readyz
#     200, an encode, an assign that stores its id in the registry beside
#     the model;
#   - Docker's health check turns "healthy";
#   - `docker stop` drains and exits 0; after `docker start` the assignment
#     is still there, unchanged.
# Exit 0 when every check holds; 1 with the failed check named (and the
# server's last log lines); 2 when docker or the image is missing.  The
# container and the volume are removed at the end.  Host ports are picked
# by Docker; loopback only.  Needs docker and curl, takes about a minute.
set -uo pipefail

image=${1:-semid}
name=semid-smoke-$$
volume=semid-smoke-$$
host=127.0.0.1

command -v docker >/dev/null || { echo "docker-smoke: no docker command" >&2; exit 2; }
command -v curl >/dev/null || { echo "docker-smoke: no curl command" >&2; exit 2; }
docker image inspect "$image" >/dev/null 2>&1 ||
	{ echo "docker-smoke: no image '$image' (docker build -t $image .)" >&2; exit 2; }

cleanup() {
	docker rm -f "$name" >/dev/null 2>&1
	docker volume rm "$volume" >/dev/null 2>&1
}
trap cleanup EXIT

fail() {
	echo "docker-smoke: FAILED: $*" >&2
	docker logs --tail 20 "$name" 2>&1 | sed 's/^/  server: /' >&2
	exit 1
}
ok() { echo "docker-smoke: ok: $*"; }

# status URL: the HTTP status of a GET (000 when nothing answers)
status() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1"; }
# is URL CODE: the GET answers CODE (a command for wait_for, which runs it
# again at each try)
is() { [ "$(status "$1")" = "$2" ]; }

# wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds, or fail
wait_for() {
	local secs=$1 what=$2 t
	shift 2
	for ((t = 0; t < secs * 2; t++)); do
		"$@" && return 0
		sleep 0.5
	done
	fail "$what (waited ${secs} s)"
}

docker run -d --name "$name" --stop-timeout 20 -p "$host::8080" -p "$host::9090" \
	-v "$volume:/var/lib/semid/models" "$image" >/dev/null || fail "docker run $image"
api=http://$(docker port "$name" 8080/tcp | head -n 1)
ops=http://$(docker port "$name" 9090/tcp | head -n 1)

wait_for 30 "/healthz on the operations port ($ops) answers 200" is "$ops/healthz" 200
ok "/healthz 200 on $ops"
uid=$(docker exec "$name" id -u) || fail "docker exec id"
[ "$uid" = 10001 ] || fail "the server runs as uid $uid, not 10001"
ok "runs as uid 10001"
is "$ops/readyz" 503 || fail "/readyz without a model is not 503"
ok "/readyz 503 while no model is published"

docker run --rm -v "$volume:/var/lib/semid/models" --entrypoint bash "$image" -c '
	set -e
	semid-train gen --out /tmp/d --items 500 --users 400 --interactions 8000 --dim 32 \
		--seed 3 >/dev/null
	semid-train --items /tmp/d/items.npy --users /tmp/d/users.npy --train /tmp/d/train.tsv \
		--epochs 2 --out /var/lib/semid/models/model.safetensors >/dev/null 2>/tmp/log ||
		{ cat /tmp/log >&2; exit 1; }' || fail "semid-train in the image"
ok "semid-train published a model into the volume"
wait_for 30 "/readyz 200 once the model is published" is "$ops/readyz" 200
ok "the server took the model (/readyz 200)"

emb=$(printf '0.1,%.0s' {1..31})0.1
body="{\"inputs\": [{\"id\": \"smoke-1\", \"embedding\": [$emb]}]}"
post() {
	curl -s --max-time 10 -X POST -H 'Content-Type: application/json' -d "$body" "$api/$1"
}
out=$(post v1/items:encode) || fail "POST /v1/items:encode"
[[ $out == *'"sid": "'* ]] || fail "encode answered: $out"
ok "encode: ${out:0:120}"
out=$(post v1/items:assign) || fail "POST /v1/items:assign"
[[ $out == *'"created": true'* ]] || fail "assign answered: $out"
sid=$(sed -n 's/.*"sid": "\([0-9-]*\)".*/\1/p' <<<"$out")
[ -n "$sid" ] || fail "no sid in the assign answer: $out"
ok "assign: smoke-1 is $sid"

health() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$name")" = healthy ]; }
wait_for 60 "Docker's health check says healthy" health
ok "health check: healthy"

docker stop "$name" >/dev/null || fail "docker stop"
code=$(docker inspect -f '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || fail "exit status $code after docker stop"
docker logs "$name" 2>&1 | grep -q 'event=shutdown msg="drained; bye"' ||
	fail "no drained line in the log after docker stop"
ok "docker stop: drained, exit 0"

docker start "$name" >/dev/null || fail "docker start"
api=http://$(docker port "$name" 8080/tcp | head -n 1)
ops=http://$(docker port "$name" 9090/tcp | head -n 1)
wait_for 30 "/readyz 200 after the restart" is "$ops/readyz" 200
out=$(curl -s --max-time 5 "$api/v1/items/smoke-1") || fail "GET /v1/items/smoke-1"
[[ $out == *"\"sid\": \"$sid\""* ]] || fail "after the restart smoke-1 is: $out (was $sid)"
ok "after a restart smoke-1 is still $sid"
echo "docker-smoke: every check held for $image"

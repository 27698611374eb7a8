#!/bin/bash
# Docker HEALTHCHECK: healthy when GET /readyz answers 200 (model loaded and warmed, not shutting down).
# Plain HTTP on the port of CROSSL_HTTP_ADDR, with bash's /dev/tcp: the image has no curl. With TLS on
# (CROSSL_TLS_CERT) this check cannot speak HTTPS and reports unhealthy: use the orchestrator's probes.
# Kubernetes ignores HEALTHCHECK; the Helm chart probes /readyz and /healthz itself.
set -euo pipefail
port="${CROSSL_HTTP_ADDR:-0.0.0.0:8080}"
port="${port##*:}"
exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
IFS= read -r -t 5 status <&3
[[ "$status" == HTTP/1.?" 200 "* ]]

# Sourced by the L7 benchmarks: what run.sh and ab.sh both configure.
# Uses WORK, BE, PORT and KEEPALIVE (default 320, ingress-nginx's
# upstream-keepalive-connections).

# ACCESS_LOG=1: access logs on, nodeway at its default level and nginx
# buffered (`buffer=64k flush=1s`), both to files in $WORK; otherwise both
# off (nodeway at warn). Sets NODEWAY_LOG_LEVEL and NGINX_ACCESS_LOG.
access_log_settings() {
  if [ "${ACCESS_LOG:-0}" = 1 ]; then
    NODEWAY_LOG_LEVEL="info,hickory_server=warn"  # the default
    NGINX_ACCESS_LOG="$WORK/nginx-access.log combined buffer=64k flush=1s"
  else
    NODEWAY_LOG_LEVEL=warn
    NGINX_ACCESS_LOG=off
  fi
}

# The part of nginx.conf they share (1 worker, what ingress-nginx renders
# for proxying, minus Lua), up to the server blocks; the caller adds its
# servers and the closing brace.
nginx_head() {
  cat <<CFG
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 8192; }
http {
  access_log ${NGINX_ACCESS_LOG:-off};
  upstream be { server $BE:$PORT; keepalive ${KEEPALIVE:-320}; keepalive_requests 1000000; }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host \$host;
  proxy_set_header X-Request-ID \$request_id;
  proxy_set_header X-Real-IP \$remote_addr;
  proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Host \$host;
  proxy_set_header X-Forwarded-Port \$server_port;
  proxy_set_header X-Forwarded-Proto \$scheme;
  keepalive_requests 1000000;
CFG
}

# The backend as nodeway sees it: a headless Service `be` (the L4 plane
# binds nothing for it) whose one endpoint is $BE:$PORT. The caller adds
# its Ingresses.
backend_yaml() {
  cat <<YAML
apiVersion: v1
kind: Service
metadata: {name: be, namespace: default}
spec:
  clusterIP: None
  ports: [{name: http, port: 80, targetPort: $PORT}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: be, namespace: default}
subsets:
- addresses: [{ip: $BE}]
  ports: [{name: http, port: $PORT}]
YAML
}

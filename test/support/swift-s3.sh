#!/usr/bin/env bash
# Single-node OpenStack Swift + s3api on loopback, everything under $BASE (the S3 server the tests use).
# Needs: apt-get install -y --no-install-recommends swift swift-proxy swift-account swift-container swift-object memcached
# Usage: swift-s3.sh start|stop BASE
#   S3 endpoint http://127.0.0.1:${PORT:-18080}, access key test:tester, secret testing, region us-east-1,
#   path-style addressing. The object, container and account servers and memcached listen on PORT+1 ..
#   PORT+4, so that two instances with different PORTs can run side by side. BASE is wiped at start.
# Every port derives from PORT, and the rings are built in one Python process (faster than swift-ring-builder's
# one process per command).
set -euo pipefail
cmd=${1:-start}; S=${2:?usage: swift-s3.sh start|stop BASE_DIR}; PORT=${PORT:-18080}; U=$(id -un)
if [ "$cmd" = stop ]; then for f in "$S"/run/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; rm -f "$f"; done; exit 0; fi
OBJ_PORT=$((PORT + 1)); CONT_PORT=$((PORT + 2)); ACC_PORT=$((PORT + 3)); MC_PORT=$((PORT + 4))
rm -rf "$S"; mkdir -p "$S"/etc "$S"/srv/d1 "$S"/run "$S"/log; cd "$S"/etc
printf '[swift-hash]\nswift_hash_path_suffix = test-suffix\nswift_hash_path_prefix = test-prefix\n[storage-policy:0]\nname = Policy-0\ndefault = yes\n' > swift.conf
for t in account:$ACC_PORT container:$CONT_PORT object:$OBJ_PORT; do n=${t%%:*}; p=${t##*:}
  printf '[DEFAULT]\ndevices = %s/srv\nmount_check = false\nbind_ip = 127.0.0.1\nbind_port = %s\nworkers = 1\nuser = %s\nswift_dir = %s/etc\nlog_level = WARNING\n[pipeline:main]\npipeline = %s-server\n[app:%s-server]\nuse = egg:swift#%s\n' "$S" "$p" "$U" "$S" "$n" "$n" "$n" > $n-server.conf
done
# The three 1-replica rings, built in one Python process (what `swift-ring-builder X.builder create 10 1 1;
# add r1z1-127.0.0.1:PORT/d1 100; rebalance` does, in 1 s instead of 9 invocations of ~1 s each).
/usr/bin/python3 - "$ACC_PORT" "$CONT_PORT" "$OBJ_PORT" <<'PY'
import sys
from swift.common.ring import RingBuilder
for name, port in zip(('account', 'container', 'object'), sys.argv[1:]):
    b = RingBuilder(10, 1, 1)
    b.add_dev({'region': 1, 'zone': 1, 'ip': '127.0.0.1', 'port': int(port), 'device': 'd1', 'weight': 100})
    b.rebalance()
    b.save(name + '.builder')
    b.get_ring().save(name + '.ring.gz')
PY
cat > proxy-server.conf <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $PORT
workers = 1
user = $U
swift_dir = $S/etc
log_level = WARNING
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk s3api tempauth copy slo dlo proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
[filter:s3api]
use = egg:swift#s3api
location = us-east-1
[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$MC_PORT
EOF
for f in catch_errors gatekeeper healthcheck proxy_logging listing_formats bulk copy slo dlo; do printf '[filter:%s]\nuse = egg:swift#%s\n' "${f/proxy_logging/proxy-logging}" "$f" >> proxy-server.conf; done
memcached -l 127.0.0.1 -p $MC_PORT -U 0 -u "$U" -m 64 > "$S"/log/memcached.log 2>&1 & echo $! > "$S"/run/memcached.pid
for n in account container object proxy; do /usr/bin/swift-$n-server "$S"/etc/$n-server.conf > "$S"/log/$n.log 2>&1 & echo $! > "$S"/run/$n.pid; done
for i in $(seq 1 1200); do curl -sf "http://127.0.0.1:$PORT/healthcheck" >/dev/null && { echo "swift s3api ready on 127.0.0.1:$PORT"; exit 0; }; sleep 0.05; done
echo "swift did not start; see $S/log" >&2; exit 1

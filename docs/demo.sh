#!/bin/bash
# apimon end to end on loopback: installs what is missing (when run as root),
# builds, then starts a private Redis and nginx with the module, loads the
# example catalog, buys a subscription through the management API and shows
# one call let through and three refused.  Everything it starts is stopped
# and removed at exit.
#
#   sudo bash docs/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

if [ "$(id -u)" = 0 ]; then
    sh .ci/install-deps
else
    for p in $(cat .ci/packages); do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
            || { echo "demo: package $p is missing; run: sudo bash docs/demo.sh" >&2; exit 1; }
    done
fi

make -s -j2 all

work=$(mktemp -d /tmp/apimon-demo.XXXXXX)
chmod 755 "$work"
redis_pid=""
cleanup() {
    [ -f "$work/nginx.pid" ] && kill -QUIT "$(cat "$work/nginx.pid")" 2>/dev/null || true
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    perl -MIO::Socket::IP -e \
        'print IO::Socket::IP->new(LocalHost => "127.0.0.1", LocalPort => 0, Listen => 1)->sockport'
}
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "demo: nothing listens on port $1" >&2
    return 1
}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

rport=$(free_port)
hport=$(free_port)
uport=$(free_port)

step "Redis on 127.0.0.1:$rport"
# the persistence apimon requires (README, "Redis: persistence it needs")
redis-server --bind 127.0.0.1 --port "$rport" --save '' --appendonly yes \
    --appendfsync everysec --maxmemory-policy noeviction \
    --dir "$work" --logfile "$work/redis.log" &
redis_pid=$!
wait_port "$rport"

# the admin token: a random secret in a file only nginx reads
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "demo:$token" > "$work/admin.tokens"
chmod 600 "$work/admin.tokens"

# the key secret: new keys carry a tag under it, so a forged key is refused
# without asking Redis
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/key.secret"
chmod 600 "$work/key.secret"

mkdir -p "$work/logs"
cat > "$work/nginx.conf" <<EOF
load_module $repo/build/ngx_http_apimon_module.so;
daemon on;
user root;
pid $work/nginx.pid;
error_log $work/logs/error.log warn;
events { worker_connections 256; }
http {
    access_log $work/logs/access.log;
    client_body_temp_path $work/body;
    proxy_temp_path $work/proxy;
    apimon_redis 127.0.0.1:$rport;
    apimon_key_secret_file $work/key.secret;

    # the API being sold (a stand-in upstream)
    server {
        listen 127.0.0.1:$uport;
        location / {
            default_type application/json;
            return 200 '{"city": "Lisbon", "forecast": "sunny", "subscription": "\$http_x_apimon_subscription"}\n';
        }
    }

    server {
        listen 127.0.0.1:$hport;

        location /apimon/ {
            apimon_admin;
            apimon_admin_token_file $work/admin.tokens;
            allow 127.0.0.1;
            deny all;
        }

        location /weather/ {
            apimon on;
            apimon_api forecast;
            apimon_quota 3 day;          # a tiny location quota, to show a refusal
            proxy_set_header X-Apimon-Subscription \$apimon_subscription;
            proxy_pass http://127.0.0.1:$uport;
        }
    }
}
EOF
[ "$(id -u)" = 0 ] || sed -i '/^user root;/d' "$work/nginx.conf"

step "nginx with the apimon module on 127.0.0.1:$hport"
nginx -p "$work/" -c "$work/nginx.conf"
wait_port "$hport"

step "billing-agent catalog apply schema/catalog.example.json"
./build/billing-agent --redis "127.0.0.1:$rport" catalog apply schema/catalog.example.json

A="http://127.0.0.1:$hport/apimon/v1/organizations/default"
H="Authorization: Bearer $token"

step "a developer, through the management API"
curl -sS -H "$H" -H "Content-Type: application/json" -X POST "$A/developers" \
    -d '{"email": "ann@example.com", "firstName": "Ann", "lastName": "Lee", "userName": "ann"}'
echo

step "purchase weather-bronze (the keys are shown this once)"
sub=$(curl -sS -H "$H" -H "Content-Type: application/json" \
      -X POST "$A/developers/ann@example.com/subscriptions" \
      -d '{"apiproduct": "weather", "plan": "weather-bronze"}')
echo "$sub" | sed 's/"\(primary\|secondary\)":"\(ak2_[a-z0-9]\{8\}\)[a-z0-9]*"/"\1":"\2…"/g'
key=$(echo "$sub" | sed 's/.*"primary":"\([^"]*\)".*/\1/')

show() {
    curl -sS -D - -o "$work/body.txt" "$@" \
        | grep -iE '^(HTTP/|ratelimit|retry-after|www-authenticate|content-type)' || true
    cat "$work/body.txt"
    echo
}

step "1. a call with the key: let through, with its RateLimit headers"
show -H "X-API-Key: $key" "http://127.0.0.1:$hport/weather/today"

step "2. a forged key (our shape, the last tag digit changed): refused (401), no Redis round trip"
forged="${key%?}$([ "${key: -1}" = a ] && echo b || echo a)"
show -H "X-API-Key: $forged" "http://127.0.0.1:$hport/weather/today"

step "3. calls until the location quota (3 a day) is spent: the 4th is refused (403)"
for i in 2 3; do
    curl -sS -o /dev/null -w "   call $i: %{http_code}\n" -H "X-API-Key: $key" \
        "http://127.0.0.1:$hport/weather/today"
done
show -H "X-API-Key: $key" "http://127.0.0.1:$hport/weather/today"

step "what the subscription used (management API)"
name=$(echo "$sub" | sed 's/.*"name":"\([^"]*\)".*/\1/')
curl -sS -H "$H" "$A/developers/ann@example.com/subscriptions/$name"
echo

step "done: everything started here is stopped and removed"

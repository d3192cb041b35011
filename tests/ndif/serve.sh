#!/usr/bin/env bash
# A local NDIF (the `ndif` package's own server) as headscope's remote test bed, on loopback only.
#
#   tests/ndif/serve.sh install   NDIF 0.1.2 + moto into their own venv ($NDIF_VENV), redis-server from Debian
#   tests/ndif/serve.sh start     redis, S3 store (moto), Ray head + NDIF controller, NDIF API; deploy the models
#   tests/ndif/serve.sh stop      stop only what `start` started (by the process ids it recorded)
#   tests/ndif/serve.sh env       the client's environment (NDIF_HOST, HF_HOME, ...) as `export` lines
#   tests/ndif/serve.sh status    what runs, and NDIF's /status
#   tests/ndif/serve.sh restart-api   the API (and its dispatcher) anew: after it lost Ray (503 "reconnecting")
#   tests/ndif/serve.sh evict ID  take a deployed model's replicas down (the cold model is cold again)
#   tests/ndif/serve.sh extra-api PORT   one more API on the same queue and Ray (with NDIF_TESTBED_MIN_NNSIGHT, or
#                                 NDIF_TESTBED_AUTH=1: NDIF's key check against a local Postgres holding the one key)
#
# What is not NDIF's default here, and why (see docs/ndif-testbed.md):
# - Python 3.11: ndif 0.1.2 says Requires-Python >=3.12, but this machine has 3.11 only and the package's code
#   compiles and runs on 3.11; it is installed with --ignore-requires-python.
# - Object store: moto's S3 server, not RustFS (no RustFS server installs from a registry here; PyPI's `rustfs` is an
#   unrelated fsspec client).
# - The model actor: NDIF's controller only places models on nodes with GPUs and its ModelActor calls torch.cuda.
#   The Ray head advertises one GPU (--num-gpus 1, so placement runs as NDIF's does) and the controller deploys
#   tests/ndif/cpu_actor.py's CpuModelActor (NDIF's actor minus its CUDA calls), via NDIF's own
#   NDIF_DEFAULT_MODEL_ACTOR_CLASS setting.
# - Models come from a local Hugging Face cache ($TESTBED/hf) with the hub offline; the embedded model's converted
#   folder is served as HuggingFaceTB/SmolLM2-135M-Instruct.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
NDIF_VENV="${NDIF_VENV:-/work/venvs/ndif}"
TESTBED="${NDIF_TESTBED_DIR:-/tmp/headscope-ndif}"
BASE="${NDIF_TESTBED_PORT_BASE:-27000}"
REDIS_PORT=$((BASE + 379)); S3_PORT=$((BASE + 900)); API_PORT=$((BASE + 801))
RAY_PORT=$((BASE + 385)); RAY_CLIENT_PORT=$((BASE + 1)); RAY_DASHBOARD_PORT=$((BASE + 265))
PG_PORT=$((BASE + 432))
PG_BIN="${NDIF_TESTBED_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)}"
EMBEDDED_ID="HuggingFaceTB/SmolLM2-135M-Instruct"
# The tiny Llama once more, downloaded but never deployed by `start`: NDIF lists it COLD and deploys it on its first
# request (the PROVISIONING and DEPLOYING job states); `evict` makes it cold again
COLD_ID="headscope-cold/llama"
EMBEDDED_DIR="$(ls -d "$REPO"/cache/models/SmolLM2-135M-Instruct-* 2>/dev/null | head -1 || true)"
PIDS="$TESTBED/pids"
LOGS="$TESTBED/logs"
API_KEY="${NDIF_TESTBED_KEY:-00000000-0000-4000-8000-000000000000}"

server_env() {
    export PATH="$NDIF_VENV/bin:$PATH"
    export NDIF_HOME="$TESTBED/home"
    export NDIF_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
    export NDIF_OBJECT_STORE_URL="http://127.0.0.1:$S3_PORT"
    export NDIF_OBJECT_STORE_ACCESS_KEY=testing NDIF_OBJECT_STORE_SECRET_KEY=testing
    export NDIF_RAY_ADDRESS="ray://127.0.0.1:$RAY_CLIENT_PORT"
    export NDIF_RAY_HEAD_PORT="$RAY_PORT" NDIF_API_PORT="$API_PORT" NDIF_API_URL="http://127.0.0.1:$API_PORT"
    export NDIF_DEFAULT_MODEL_ACTOR_CLASS="cpu_actor.CpuModelActor"
    export NDIF_DEFAULT_DTYPE=float32
    export NDIF_MINIMUM_DEPLOYMENT_TIME_SECONDS=0
    export NDIF_DEFAULT_EXECUTION_TIMEOUT_SECONDS="${NDIF_TESTBED_EXECUTION_TIMEOUT:-600}"
    export NDIF_MIN_NNSIGHT_VERSION="${NDIF_TESTBED_MIN_NNSIGHT:-}"
    export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"
    export HF_HOME="$TESTBED/hf" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
    export GRPC_ENABLE_FORK_SUPPORT=0 RAY_USAGE_STATS_ENABLED=0 OMP_NUM_THREADS=2 HEADSCOPE_NDIF_TESTBED=1
    export RAY_agent_register_timeout_ms=120000  # a loaded 2-core machine starts the dashboard agent slowly
    # Ray's client proxy gives the per-client server it starts for each connection (the API's dispatcher, deploys)
    # 30 s to come up; at nice 19 on a busy 2-core machine it took longer, the API lost Ray and answered 503
    # "compute backend is reconnecting" for good (seen at 12:52)
    export RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S=600
    export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
}

client_env() {
    cat <<EOF
export NDIF_HOST=http://127.0.0.1:$API_PORT
export NDIF_API_KEY=$API_KEY
export HF_HOME=$TESTBED/hf
export HF_HUB_OFFLINE=1
EOF
}

log() { echo "serve.sh: $*" >&2; }

wait_port() {  # host port seconds what
    local deadline=$((SECONDS + $3))
    until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then log "$4 did not open port $2 within $3 s (see $LOGS)"; return 1; fi
        sleep 0.5
    done
}

spawn() {  # name command...   (own session, so stop can signal its whole process group)
    local name="$1"; shift
    setsid "$@" >"$LOGS/$name.log" 2>&1 < /dev/null &
    echo $! >"$PIDS/$name"
}

hf_cache_entry() {  # repo_id source_dir: a hub-shaped cache entry whose files link to source_dir
    local repo="$1" src="$2"
    local entry="$HF_HOME/hub/models--${repo//\//--}"
    local commit
    commit="$(sha1sum "$src/config.json" | cut -c1-40)"
    mkdir -p "$entry/refs" "$entry/snapshots/$commit"
    printf '%s' "$commit" >"$entry/refs/main"
    for f in "$src"/*; do
        case "$(basename "$f")" in COMPLETE) continue ;; esac
        ln -sf "$f" "$entry/snapshots/$commit/$(basename "$f")"
    done
}

# One tiny random model per family the nnsight backend serves (tests/ndif/tiny_models.py, built with headscope's
# venv), served as headscope-tiny/<family>. NDIF_TESTBED_TINY=0 deploys the embedded model alone.
tiny_model_ids() {
    [ "${NDIF_TESTBED_TINY:-1}" = 1 ] || return 0
    local folder
    for folder in "$TESTBED"/tiny/*/; do [ -e "$folder/model.safetensors" ] && echo "headscope-tiny/$(basename "$folder")"; done
}

build_tiny_models() {
    [ "${NDIF_TESTBED_TINY:-1}" = 1 ] || return 0
    "$REPO/.venv/bin/python" "$HERE/tiny_models.py" "$TESTBED/tiny" >"$LOGS/tiny.log" 2>&1 \
        || { log "building the tiny models failed (see $LOGS/tiny.log)"; exit 1; }
    local folder
    for folder in "$TESTBED"/tiny/*/; do hf_cache_entry "headscope-tiny/$(basename "$folder")" "${folder%/}"; done
    hf_cache_entry "$COLD_ID" "$TESTBED/tiny/llama"
}

model_key() {  # repo_id: the model key as nnsight's client spells it (TransformersModel, task text-generation)
    echo "nnsight.modeling.transformers.TransformersModel:{\"repo_id\": \"$1\", \"revision\": null, \"task\": \"text-generation\"}"
}

cmd_install() {
    local started=$SECONDS
    command -v redis-server >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server; }
    if [ ! -x "$NDIF_VENV/bin/ndif" ]; then
        python3 -m venv "$NDIF_VENV"
        "$NDIF_VENV/bin/pip" install -q torch==2.13.0
        # Pins shared with headscope's venv, so a wheel for Python 3.11 is found for each.
        "$NDIF_VENV/bin/pip" install -q --only-binary=:all: --ignore-requires-python -c "$HERE/constraints.txt" \
            "ndif[api,ray,postgres]==0.1.2" "moto[server]"
    fi
    log "installed in $((SECONDS - started)) s; $(du -sm "$NDIF_VENV" | cut -f1) MB in $NDIF_VENV"
}

cmd_start() {
    [ -x "$NDIF_VENV/bin/ndif" ] || { log "no NDIF venv at $NDIF_VENV: run '$0 install' first"; exit 1; }
    [ -n "$EMBEDDED_DIR" ] || { log "no converted embedded model under $REPO/cache/models"; exit 1; }
    if [ -s "$PIDS/api" ] && kill -0 "$(cat "$PIDS/api")" 2>/dev/null; then log "already running"; client_env; return 0; fi
    server_env
    mkdir -p "$PIDS" "$LOGS" "$NDIF_HOME" "$HF_HOME"
    # A start that fails half way stops what it had started (so no orphan outlives its overwritten pid file).
    trap 'code=$?; if [ $code -ne 0 ]; then cmd_stop; fi; exit $code' EXIT
    hf_cache_entry "$EMBEDDED_ID" "$EMBEDDED_DIR"
    build_tiny_models
    local started=$SECONDS

    spawn redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$TESTBED"
    spawn s3 moto_server -H 127.0.0.1 -p "$S3_PORT"
    wait_port 127.0.0.1 "$REDIS_PORT" 20 redis
    wait_port 127.0.0.1 "$S3_PORT" 30 "the S3 store"

    # NDIF's ray/start.sh with its flags, plus: one advertised GPU (see above), small CPU/memory, loopback.
    local resources
    resources="$(python -c "import json, psutil; print(json.dumps({'head': 10, 'cuda_memory_bytes': 8 << 30,
        'cpu_memory_bytes': psutil.virtual_memory().total}))")"
    # Ray's raylet gives its dashboard agent 15 s to write its port files (fixed in the raylet); on a loaded 2-core
    # machine the agent's imports take longer and the head exits. The ports are fixed here, so the files are written
    # for the agent as soon as the node id is known (pre_write_agent_ports); the raylet then connects to the agent
    # once it listens. 3 tries. Every process keeps the priority serve.sh was started with (`nice -n 19 serve.sh
    # start` keeps the whole stack at nice 19 on a shared machine).
    local attempt
    for attempt in 1 2 3; do
        # session_latest still names the previous session until the new head replaces it: the port files must go to
        # the new one, so the old link goes first
        rm -f "$TESTBED/ray/session_latest"
        start_ray_head "$resources"
        pre_write_agent_ports &
        local deadline=$((SECONDS + 180)) up=0
        while kill -0 "$(cat "$PIDS/ray")" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
            if grep -q "Ray runtime started" "$LOGS/ray.log"; then up=1; break; fi
            sleep 1
        done
        if [ $up = 1 ]; then break; fi
        log "the Ray head did not start (attempt $attempt), see $LOGS/ray.log"
        stop_one ray
        sweep_ray
        [ "$attempt" = 3 ] && exit 1
    done
    RAY_ADDRESS="127.0.0.1:$RAY_PORT" python -m ndif.services.ray.deployments.controller.controller \
        >"$LOGS/controller.log" 2>&1

    spawn api gunicorn --config python:ndif.services.api.gunicorn_conf --bind "127.0.0.1:$API_PORT" \
        ndif.services.api.app:app
    wait_port 127.0.0.1 "$API_PORT" 60 "the NDIF API"
    wait_connected "$API_PORT" api
    log "services up in $((SECONDS - started)) s"

    # The model key as nnsight's client spells it (TransformersModel, task text-generation), given outright:
    # `ndif deploy ID` would build it through nnsight's meta load, which under transformers 5.24 cannot infer a
    # tokenizer for a pre-built model (nnsight 0.8.1 reads TextGenerationPipeline._load_tokenizer = None as "none").
    local ids=("$EMBEDDED_ID") id
    for id in $(tiny_model_ids); do ids+=("$id"); done
    {
        echo "models:"
        for id in "${ids[@]}"; do
            echo "  - checkpoint: $id"
            echo "    model_key: '$(model_key "$id")'"
            echo "    task: text-generation"
            echo "    dtype: float32"
            echo "    pinned: true"
        done
    } >"$TESTBED/models.yaml"
    ndif deploy -f "$TESTBED/models.yaml" >"$LOGS/deploy.log" 2>&1 \
        || { log "deploy failed (see $LOGS/deploy.log)"; cat "$LOGS/deploy.log" >&2; exit 1; }
    log "deployed ${ids[*]}; ready in $((SECONDS - started)) s"
    trap - EXIT
    client_env
}

pre_write_agent_ports() {  # the port files Ray's agents would write, with the fixed ports they are given
    local deadline=$((SECONDS + 120)) gcs
    while [ $SECONDS -lt $deadline ]; do
        gcs="$(ls "$TESTBED"/ray/session_latest/gcs_server_port_* 2>/dev/null | head -1 || true)"
        if [ -n "$gcs" ]; then
            local node="${gcs##*_}" dir; dir="$(dirname "$gcs")"
            [ -e "$dir/dashboard_agent_listen_port_$node" ] || echo -n $((BASE + 367)) >"$dir/dashboard_agent_listen_port_$node"
            [ -e "$dir/metrics_agent_port_$node" ] || echo -n $((BASE + 366)) >"$dir/metrics_agent_port_$node"
            [ -e "$dir/metrics_export_port_$node" ] || echo -n $((BASE + 80)) >"$dir/metrics_export_port_$node"
            [ -e "$dir/runtime_env_agent_port_$node" ] || echo -n $((BASE + 368)) >"$dir/runtime_env_agent_port_$node"
            return 0
        fi
        sleep 0.2
    done
}

start_ray_head() {
    spawn ray ray start --head --block --node-ip-address 127.0.0.1 --port "$RAY_PORT" \
        --ray-client-server-port "$RAY_CLIENT_PORT" --num-cpus 12 --num-gpus 1 --resources "$resources" \
        --object-store-memory $((512 << 20)) --include-dashboard true --dashboard-host 127.0.0.1 \
        --dashboard-port "$RAY_DASHBOARD_PORT" --dashboard-agent-grpc-port $((BASE + 366)) \
        --dashboard-agent-listen-port $((BASE + 367)) --metrics-export-port $((BASE + 80)) \
        --runtime-env-agent-port $((BASE + 368)) --object-manager-port $((BASE + 76)) \
        --node-manager-port $((BASE + 77)) --min-worker-port $((BASE + 100)) --max-worker-port $((BASE + 199)) \
        --temp-dir "$TESTBED/ray"
}

wait_connected() {  # port log-name: until that API's own dispatcher has reached Ray, and its /status answers
    # /connected reads one Redis flag shared by every API on this Redis (`ray:connected`): a second or restarted API
    # answers 200 there from the flag the running one set, and a few seconds later its own dispatcher deletes the flag
    # while it connects (every API then answers 503 "compute backend is reconnecting"). So the new API's log must
    # say its dispatcher connected first (seen at 13:24: a request 5 s after extra-api returned was refused).
    local deadline=$((SECONDS + 180))
    until grep -q "Connected to Ray" "$LOGS/$2.log" 2>/dev/null && curl -sf "http://127.0.0.1:$1/connected" >/dev/null \
            && curl -sf "http://127.0.0.1:$1/status" >/dev/null; do
        if [ $SECONDS -ge $deadline ]; then log "the API on port $1 never connected to Ray (see $LOGS)"; exit 1; fi
        sleep 1
    done
}

stop_one() {  # name: its process group, by the id start recorded
    [ -s "$PIDS/$1" ] || return 0
    local pid; pid="$(cat "$PIDS/$1")"
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$PIDS/$1"
}

sweep_ray() {  # Ray's own daemons (gcs, raylet, workers) left behind: only those under this test bed's temp dir
    for proc in /proc/[0-9]*; do
        if tr '\0' ' ' 2>/dev/null <"$proc/cmdline" | grep -q -- "$TESTBED/ray"; then
            kill -KILL "${proc#/proc/}" 2>/dev/null || true
        fi
    done
}

cmd_stop() {
    [ -d "$PIDS" ] || return 0
    for name in "$PIDS"/api-*; do [ -e "$name" ] && stop_one "$(basename "$name")"; done
    for name in api ray s3 redis pg; do stop_one "$name"; done
    sweep_ray
    log "stopped"
}

cmd_extra_api() {  # port: one more NDIF API on the same queue and Ray, with this shell's NDIF_TESTBED_MIN_NNSIGHT
    server_env      # and, with NDIF_TESTBED_AUTH=1, NDIF's API-key check (its keys table in a local Postgres)
    if [ "${NDIF_TESTBED_AUTH:-0}" = 1 ]; then
        start_auth_db
        export NDIF_POSTGRES_URL="postgresql://postgres@127.0.0.1:$PG_PORT/ndif"
    fi
    spawn "api-$1" gunicorn --config python:ndif.services.api.gunicorn_conf --bind "127.0.0.1:$1" \
        ndif.services.api.app:app
    wait_port 127.0.0.1 "$1" 60 "the extra NDIF API"
    wait_connected "$1" "api-$1"
}

# NDIF checks keys only when NDIF_POSTGRES_URL is set: then POST /request looks the key up in its accounts database
# (ndif/services/api/auth.py: `keys` joined to `users` and the key's user tags). A Postgres of this test bed holds
# those tables (the columns auth.py reads) and one row: the test bed's key. Postgres refuses to run as root, so it
# runs as Debian's `postgres` user, trusting loopback connections only.
start_auth_db() {
    [ -x "$PG_BIN/postgres" ] || { log "no PostgreSQL server (apt-get install postgresql)"; exit 1; }
    if [ -s "$PIDS/pg" ] && kill -0 "$(cat "$PIDS/pg")" 2>/dev/null; then return 0; fi
    local data="$TESTBED/pg/data"
    if [ ! -s "$data/PG_VERSION" ]; then
        mkdir -p "$TESTBED/pg" && chown postgres "$TESTBED/pg"
        runuser -u postgres -- "$PG_BIN/initdb" -D "$data" --auth=trust -U postgres >"$LOGS/pg-init.log" 2>&1 \
            || { log "initdb failed (see $LOGS/pg-init.log)"; exit 1; }
    fi
    spawn pg runuser -u postgres -- "$PG_BIN/postgres" -D "$data" -p "$PG_PORT" -k "$TESTBED/pg" \
        -c listen_addresses=127.0.0.1
    wait_port 127.0.0.1 "$PG_PORT" 60 PostgreSQL
    local sql=(psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1)
    until "${sql[@]}" -d postgres -c 'select 1' >/dev/null 2>&1; do sleep 0.5; done  # past its start-up
    "${sql[@]}" -d postgres -tAc "select 1 from pg_database where datname = 'ndif'" | grep -q 1 \
        || "${sql[@]}" -d postgres -c 'create database ndif'
    "${sql[@]}" -d ndif >"$LOGS/pg-schema.log" 2>&1 <<SQL
create table if not exists users (user_id uuid primary key, email text);
create table if not exists keys (key_id uuid primary key, user_id uuid not null references users);
create table if not exists user_tags (user_tag_id serial primary key, name text not null unique);
create table if not exists key_user_tag_assignments (key_id uuid references keys, user_tag_id int references user_tags);
insert into users values ('11111111-1111-4111-8111-111111111111', 'testbed@localhost') on conflict do nothing;
insert into keys values ('$API_KEY', '11111111-1111-4111-8111-111111111111') on conflict do nothing;
SQL
}

cmd_restart_api() {  # the main NDIF API (and its queue dispatcher) anew, e.g. after it lost Ray on a starved machine
    server_env
    stop_one api
    spawn api gunicorn --config python:ndif.services.api.gunicorn_conf --bind "127.0.0.1:$API_PORT" \
        ndif.services.api.app:app
    wait_port 127.0.0.1 "$API_PORT" 60 "the NDIF API"
    wait_connected "$API_PORT" api
    log "API restarted"
}

cmd_evict() {  # repo_id: its replicas taken down through NDIF's own evict (by model key: `ndif evict ID` builds the
    server_env  # key through nnsight's meta load, which fails here like `ndif deploy ID`)
    (cd "$TESTBED" && python -c 'import sys; from ndif.cli.lib.evict import evict
print(evict(model_keys=[sys.argv[1]], on_message=print))' "$(model_key "$1")") >>"$LOGS/evict.log" 2>&1 \
        || { log "evict failed (see $LOGS/evict.log)"; exit 1; }
}

cmd_status() {
    for name in redis s3 ray api; do
        local pid=""; [ -s "$PIDS/$name" ] && pid="$(cat "$PIDS/$name")"
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "$name: pid $pid"; else echo "$name: not running"; fi
    done
    curl -sf "http://127.0.0.1:$API_PORT/status" && echo
}

if [ "${NDIF_TESTBED_SOURCE_ONLY:-}" = 1 ]; then return 0; fi
case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    env) client_env ;;
    status) cmd_status ;;
    extra-api) cmd_extra_api "$2" ;;
    restart-api) cmd_restart_api ;;
    evict) cmd_evict "$2" ;;
    *) echo "usage: $0 install|start|stop|env|status|restart-api|extra-api PORT|evict ID" >&2; exit 2 ;;
esac

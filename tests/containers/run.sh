#!/usr/bin/env bash
# The tests' container path, end to end, on a machine without registry access: Docker
# from the OS packages, the PostgreSQL image built locally (postgres-image.sh), one test
# binary run against a container with every other database source switched off, then
# checks that no container is left behind, both after a normal exit and after the test
# binary is killed (SIGKILL) while its container runs.
#
# Usage (as root, from anywhere): tests/containers/run.sh [TEST]   (default
# postgres_conformance). It stops the Docker daemon at the end only if it started it, and
# keeps the image (rebuilding it takes seconds; `docker image rm postgres:<tag>` removes
# it). It never touches a PostgreSQL server outside the containers it starts.
#
# Not part of .ci/run, though it takes about a minute with the test binary built: it needs
# root, may install a package, runs a Docker daemon (privileges a CI sandbox may not
# grant), and tags an image `postgres:<tag>` on the machine; the same suite already runs
# there against the local server, so only the container plumbing would be new coverage.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
test_name=${1:-postgres_conformance}
tag=$(sed -n 's/^.*POSTGRES_TAG: &str = "\(.*\)";.*$/\1/p' "$repo/tests/src/database.rs")
image="postgres:$tag"
log() { printf '\n=== %s\n' "$*"; }

# --- Docker from the OS packages ---------------------------------------------------------
if ! command -v dockerd > /dev/null; then
    log "installing docker.io"
    apt-get install -y docker.io > /dev/null || { apt-get update > /dev/null && apt-get install -y docker.io > /dev/null; }
fi
started_dockerd=
if ! docker info > /dev/null 2>&1; then
    log "starting dockerd"
    nohup dockerd > "${TMPDIR:-/tmp}/container-path-dockerd.log" 2>&1 &
    started_dockerd=$!
    for _ in $(seq 1 30); do
        docker info > /dev/null 2>&1 && break
        sleep 1
    done
    docker info > /dev/null 2>&1 || { echo "dockerd did not come up (see ${TMPDIR:-/tmp}/container-path-dockerd.log)" >&2; exit 1; }
fi
stop_dockerd() {
    if [ -n "$started_dockerd" ]; then
        kill "$started_dockerd" 2> /dev/null && wait "$started_dockerd" 2> /dev/null || true
    fi
}
trap stop_dockerd EXIT

# --- The image, built here ------------------------------------------------------------
log "building $image"
"$here/postgres-image.sh"

containers() { docker ps -aq --filter "ancestor=$image"; }
[ -z "$(containers)" ] || { echo "containers of $image exist before the run; remove them first:" >&2; docker ps -a --filter "ancestor=$image" >&2; exit 1; }

# Wait (up to 30 s) until no container of the image is left: the removal runs just
# after the test binary exits (tests/src/reaper.rs).
expect_no_container() {
    for _ in $(seq 1 60); do
        [ -z "$(containers)" ] && { echo "no container left after $1"; return 0; }
        sleep 0.5
    done
    echo "FAILED: containers left after $1:" >&2
    docker ps -a --filter "ancestor=$image" >&2
    return 1
}

# Only the container: no URL variables, and the local server on 5432 is skipped.
run_tests() {
    env -u BACKPLANE_TEST_DATABASE_URL -u DATABASE_URL BACKPLANE_TEST_CONTAINER=1 \
        cargo test --manifest-path "$repo/Cargo.toml" -p tests --features containers --test "$test_name" "$@"
}

cd "$repo"
log "building the test binary"
binary=$(run_tests --no-run --message-format=json 2> /dev/null \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[ -x "$binary" ] || { echo "FAILED: could not build the $test_name test binary" >&2; exit 1; }
echo "$binary"

log "running $test_name against a container"
started=$(date +%s)
set +e
run_tests 2>&1 | grep -E '^(test result|running|error|thread .* panicked|failures:)'
status=${PIPESTATUS[0]}
set -e
echo "exit status $status after $(( $(date +%s) - started )) s"
expect_no_container "a normal exit"
[ "$status" -eq 0 ] || { echo "FAILED: $test_name failed against the container" >&2; exit 1; }

log "killing the test binary (SIGKILL) while its container runs"
# The binary itself (not through cargo, whose death would leave it running), with the
# same environment as run_tests.
env -u BACKPLANE_TEST_DATABASE_URL -u DATABASE_URL BACKPLANE_TEST_CONTAINER=1 \
    "$binary" > /dev/null 2>&1 &
test_pid=$!
for _ in $(seq 1 120); do
    [ -n "$(containers)" ] && break
    sleep 0.5
done
[ -n "$(containers)" ] || { kill -KILL "$test_pid"; echo "FAILED: no container appeared" >&2; exit 1; }
echo "container $(containers) is up"
kill -KILL "$test_pid"
wait "$test_pid" 2> /dev/null || true
expect_no_container "SIGKILL"

log "docker ps -a"
docker ps -a

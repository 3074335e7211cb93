#!/bin/sh
# Entry point of the PostgreSQL image that tests/containers/postgres-image.sh builds from
# this machine's own PostgreSQL. It behaves like the official image as far as
# testcontainers-modules' `Postgres` relies on it: POSTGRES_USER, POSTGRES_PASSWORD and
# POSTGRES_DB are honoured, the server listens on 0.0.0.0:5432 with password
# (scram-sha-256) authentication over TCP, arguments such as `-c fsync=off` go to
# `postgres`, and "database system is ready to accept connections" is logged on stdout by
# a temporary server during initialisation and on stderr by the final server once it
# accepts TCP connections (testcontainers waits for both). The database is created with
# `postgres --single` before the temporary server. Plain POSIX sh and its builtins: the image
# has no other shell and no utilities (initdb's "locale: not found" warning is harmless:
# the cluster uses the C locale).
set -eu

PGDATA=${PGDATA:-/var/lib/postgresql/data}
user=${POSTGRES_USER:-postgres}
database=${POSTGRES_DB:-$user}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -n "${POSTGRES_PASSWORD:-}" ]; then
        host_auth=scram-sha-256
        printf '%s\n' "$POSTGRES_PASSWORD" > /tmp/pwfile
        initdb -D "$PGDATA" --username="$user" --pwfile=/tmp/pwfile --encoding=UTF8 \
            --no-locale --no-sync --auth-local=trust --auth-host="$host_auth" > /dev/null
        : > /tmp/pwfile  # the image has no rm
    else
        # As the official image with POSTGRES_HOST_AUTH_METHOD=trust.
        host_auth=trust
        initdb -D "$PGDATA" --username="$user" --encoding=UTF8 --no-locale --no-sync \
            --auth=trust > /dev/null
    fi
    # initdb only admits loopback addresses over TCP; the tests connect through Docker's
    # port mapping, from the bridge network.
    printf 'host all all all %s\n' "$host_auth" >> "$PGDATA/pg_hba.conf"
    if [ "$database" != postgres ]; then
        printf 'CREATE DATABASE "%s";\n' "$database" \
            | postgres --single -D "$PGDATA" postgres > /dev/null
    fi
    # As the official image does for its init scripts: a temporary server on the Unix
    # socket only. pg_ctl sends its log to stdout, so its "ready to accept connections"
    # lands there; testcontainers-modules' Postgres waits for that line on stdout as well
    # as the final server's on stderr.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
    pg_ctl -D "$PGDATA" -m fast -w stop
    echo "PostgreSQL init process complete; ready for start up."
fi

exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"

#!/usr/bin/env bash
# Build, without any image registry, the PostgreSQL image the tests' container fallback
# asks for: a root filesystem made of this machine's PostgreSQL server (Debian's
# postgresql-NN package), the shared libraries it links, a POSIX shell and
# entrypoint.sh, imported with `docker import` and tagged as the tag pinned in
# tests/src/database.rs, so that testcontainers finds it locally and never pulls.
#
# Usage: tests/containers/postgres-image.sh [PG_BIN_DIR]
#   PG_BIN_DIR defaults to /usr/lib/postgresql/<major of the pinned tag>/bin.
# Needs root (the files are owned by the image's postgres user) and a running Docker.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

# The one source of truth for the tag is the code that asks for it.
tag=$(sed -n 's/^.*POSTGRES_TAG: &str = "\(.*\)";.*$/\1/p' "$repo/tests/src/database.rs")
[ -n "$tag" ] || { echo "POSTGRES_TAG not found in tests/src/database.rs" >&2; exit 1; }
major=${tag%%[.-]*}
bin=${1:-/usr/lib/postgresql/$major/bin}
pg=$(dirname "$bin")
share=$("$bin/pg_config" --sharedir)
[ -x "$bin/postgres" ] || { echo "no PostgreSQL server at $bin (apt-get install postgresql-$major)" >&2; exit 1; }
actual=$("$bin/postgres" --version | sed 's/^[^0-9]*\([0-9]*\).*/\1/')
[ "$actual" = "$major" ] || { echo "$bin/postgres is PostgreSQL $actual, the pinned tag is $tag" >&2; exit 1; }

# Never replace a real (pulled) image of that tag: it is what the tests want anyway. A
# rebuild of ours leaves the previous one untagged; remove it then, and nothing else.
marker="built by tests/containers/postgres-image.sh"
previous=$(docker image inspect --format '{{.Id}}' "postgres:$tag" 2>/dev/null || true)
if [ -n "$previous" ] && [ "$(docker image inspect --format '{{.Comment}}' "postgres:$tag")" != "$marker" ]; then
    echo "postgres:$tag is already present (not built here): the tests use it as is"
    exit 0
fi

rootfs=$(mktemp -d "${TMPDIR:-/tmp}/postgres-rootfs-XXXXXX")
trap 'rm -rf "$rootfs"' EXIT
cd "$rootfs"

# Merged /usr, as Debian: every library goes to usr/lib/x86_64-linux-gnu (found by the
# loader's default search path), the loader to usr/lib64.
libdir=usr/lib/x86_64-linux-gnu
mkdir -p usr/bin usr/lib64 "$libdir" etc tmp var/run/postgresql var/lib/postgresql \
    "${pg#/}/bin" "${pg#/}/lib" "$(dirname "${share#/}")" usr/share usr/local/bin
ln -s usr/bin bin
ln -s usr/lib lib
ln -s usr/lib64 lib64
chmod 1777 tmp

# The server, initdb, and the server's loadable modules (plpgsql and the contrib
# extensions), without LLVM JIT: it would add libLLVM (over 100 MB) and the tests do not
# need it (PostgreSQL runs without JIT when llvmjit.so is absent).
cp "$bin/postgres" "$bin/initdb" "$bin/pg_ctl" "${pg#/}/bin/"
find "$pg/lib" -maxdepth 1 -name '*.so' ! -name 'llvmjit*' -exec cp {} "${pg#/}/lib/" \;
cp -r "$share" "${share#/}"
cp -r /usr/share/zoneinfo usr/share/
cp -L /bin/dash usr/bin/dash
ln -s dash usr/bin/sh

# Every shared library those files link, copied under its soname.
for file in "${pg#/}"/bin/* "${pg#/}"/lib/*.so usr/bin/dash; do
    ldd "$file" | awk '/=> \//{print $3}'
done | sort -u | while read -r library; do
    cp -L "$library" "$libdir/$(basename "$library")"
done
cp -L /lib64/ld-linux-x86-64.so.2 usr/lib64/

# The postgres user (the server refuses to run as root) owns its directories.
printf 'root:x:0:0:root:/root:/bin/sh\npostgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/sh\n' > etc/passwd
printf 'root:x:0:\npostgres:x:999:\n' > etc/group
chown 999:999 var/run/postgresql var/lib/postgresql
install -m 0755 "$here/entrypoint.sh" usr/local/bin/docker-entrypoint.sh

tar --numeric-owner -C "$rootfs" -c . | docker import --message "$marker" \
    --change "ENV PATH=$pg/bin:/usr/local/bin:/usr/bin" \
    --change 'ENV PGDATA=/var/lib/postgresql/data' \
    --change 'ENV TZ=UTC' \
    --change 'USER postgres' \
    --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
    --change 'EXPOSE 5432' \
    - "postgres:$tag" > /dev/null
if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect --format '{{.Id}}' "postgres:$tag")" ]; then
    docker image rm "$previous" > /dev/null 2>&1 || true
fi
echo "built postgres:$tag from $bin ($("$bin/postgres" --version)), $(docker image inspect --format '{{.Size}}' "postgres:$tag" | awk '{printf "%.0f MB", $1/1e6}')"

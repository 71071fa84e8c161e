#!/usr/bin/env bash
# What the scale-out rigs need from Debian (docs/scale-out.md, "Trying it locally"): PgBouncer for the
# transaction-pooling tests, etcd for Patroni's failover tests, PostgreSQL 15 for the tests that also run on
# Debian's server, and its pg_partman (the partition maintenance leaves the tables pg_partman manages to it).
# Installed only where missing; nothing is started here (each test fixture starts its own).
set -euo pipefail
needed=()
command -v pgbouncer > /dev/null || [ -x /usr/sbin/pgbouncer ] || needed+=(pgbouncer)
command -v etcd > /dev/null || [ -x /usr/bin/etcd ] || needed+=(etcd-server)
[ -x /usr/lib/postgresql/15/bin/postgres ] || needed+=(postgresql-15)
[ -f /usr/share/postgresql/15/extension/pg_partman.control ] || needed+=(postgresql-15-partman)
if [ ${#needed[@]} -gt 0 ]; then
    apt-get update -qq
    # policy-rc.d 101: the packages' own services are not started (the rigs start theirs as the test needs)
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${needed[@]}" > /dev/null
    rm -f /usr/sbin/policy-rc.d
fi

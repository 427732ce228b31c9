#!/bin/sh
# Starts jobqueue's Redis with the users of users.acl.template:
#   default   PING only, without a password: the container health check, nothing else.
#   jobqueue  workers, producers and shippers: keys under `jobqueue:` (change the pattern
#             with the `namespace` setting), reads, writes, scripts, MULTI/EXEC, INFO and
#             TIME, and nothing @dangerous (no KEYS, FLUSHALL, CONFIG, DEBUG, SHUTDOWN).
# The password comes from REDIS_PASSWORD. Redis keeps only its SHA-256, in an ACL
# file written to /data at every start, so the password is on no command line and in no
# file of the image; tests/security/test_acl.py runs the engine under these same rules.
set -eu

: "${REDIS_PASSWORD:?set REDIS_PASSWORD (see deploy/env.example)}"
digest=$(printf '%s' "$REDIS_PASSWORD" | sha256sum | cut -d ' ' -f 1)
unset REDIS_PASSWORD

umask 077
sed "s/JOBQUEUE_PASSWORD_SHA256/$digest/" /etc/jobqueue/users.acl.template >/data/users.acl

# The image's entrypoint hands /data to the redis user and drops root before starting.
exec docker-entrypoint.sh redis-server /etc/jobqueue/redis.conf --aclfile /data/users.acl

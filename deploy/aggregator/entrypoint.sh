#!/bin/sh
# Container entry point.
#   no arguments, or options only (compose's `command: ["--workers", "2"]`), or `serve ...`:
#     run the migrations, then serve (serve refuses a database that is not initialised);
#   any other fedqi-aggregator command, e.g. the administrator's one-off set-up steps:
#     docker compose -f deploy/aggregator/compose.yaml run --rm aggregator db upgrade
#     docker compose -f deploy/aggregator/compose.yaml run --rm aggregator init --name ... --aud ...
#   runs that command as given (no migrations first). See docs/operations.md, section 2.
set -eu
case "${1:-}" in
    serve)
        shift
        ;;
    "" | -*)
        ;;
    *)
        exec fedqi-aggregator "$@"
        ;;
esac
fedqi-aggregator db upgrade
exec fedqi-aggregator serve "$@"

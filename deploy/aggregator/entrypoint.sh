#!/bin/sh
# Container entry point: migrations on start, then serve. The network is initialised once by an
# admin (`fedqi-aggregator init`, see docs/operations.md); serve refuses an unmigrated database.
set -eu
fedqi-aggregator db upgrade
exec fedqi-aggregator serve "$@"

#!/bin/sh
# Regenerates the Python stubs into a scratch folder and compares them with
# the checked-in ones; fails, naming the file, when the proto changed and
# client/python/generate.sh was not run.
set -eu
pkg=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sh "$pkg/generate.sh" "$tmp"
status=0
for f in lathe_pb2.py lathe_pb2_grpc.py; do
  if ! cmp -s "$tmp/lathe/v1/$f" "$pkg/lathe/v1/$f"; then
    echo "client/python/lathe/v1/$f differs from proto/lathe/v1/lathe.proto: run client/python/generate.sh" >&2
    status=1
  else
    echo "client/python/lathe/v1/$f matches the proto"
  fi
done
exit $status

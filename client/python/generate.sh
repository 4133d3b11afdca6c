#!/bin/sh
# Writes the Python stubs of proto/lathe/v1/lathe.proto into OUT_DIR
# (default: this folder's lathe/v1, where the checked-in copies live) with
# Debian's protoc and grpc_python_plugin. CTest's python_stubs_current
# regenerates them into a scratch folder and compares.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
protoc --proto_path="$here/../../proto" --python_out="$out" \
  --grpc_out="$out" --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin \
  lathe/v1/lathe.proto

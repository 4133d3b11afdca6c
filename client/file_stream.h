// File downloads over gRPC without protobuf's copy of each chunk. The
// server streams a file as messages shaped {int64 offset = 1; bytes data =
// 2; ...} (DownloadCheckpointFileResponse and its kin); parsing one into the
// generated class copies its 1 MiB of data into a std::string, a copy that
// costs about a sixth of a loopback download's time. Here each message is
// read as the slices gRPC received it in, and the data's pieces are handed
// on where they lie.
#ifndef LATHE_CLIENT_FILE_STREAM_H_
#define LATHE_CLIENT_FILE_STREAM_H_

#include <google/protobuf/message.h>
#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace lathe::client {

// Walks one serialized message shaped {int64 offset = 1; bytes data = 2;
// ...}, given as `pieces` that hold its bytes in order (any field may
// straddle two or more pieces). Calls `data` with each contiguous piece of
// field 2, in order, pointing into `pieces` (no copy), along with the
// offset field as read so far (0 until it is seen; the server sends it
// first). Every other field, of any wire type, is skipped; when `other` is
// not null its bytes (tags included) are appended there, so that parsing
// `other` as the message gives everything but the data. The offset is
// stored in `*offset`. DATA_LOSS for bytes that are not such a message (a
// truncated varint, tag or length, a length past the end, field 1 or 2 of
// the wrong wire type, field 2 twice, an unbalanced group); `data`'s own
// error is returned as it is, and the walk stops there.
absl::Status WalkFileStreamMessage(
    absl::Span<const absl::string_view> pieces,
    const std::function<absl::Status(int64_t offset, absl::string_view data)>&
        data,
    int64_t* offset, std::string* other);

// Calls server-streaming `method` (a full name, "/lathe.v1.JobService/
// DownloadCheckpointFile") on `channel` with `request` and blocks until the
// stream ends. Each message must be the next part of the file, starting at
// `offset` (the request's offset): its offset field must be where the
// previous message's data ended. `sink` is given the data's pieces in
// order, on a gRPC thread, one call at a time; their memory is gRPC's and
// is gone when `sink` returns. When `first_fields` is not null it receives
// the first message's fields other than the data, serialized (to be parsed
// as the response message for the FileInfo it carries).
//
// Returns the call's status (as FromGrpc maps it); DATA_LOSS for a message
// that is malformed or out of order; `sink`'s error when it fails. Either
// of the last two cancels the call through `ctx`.
absl::Status ReadFileStream(
    const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
    const google::protobuf::Message& request, grpc::ClientContext* ctx,
    int64_t offset,
    const std::function<absl::Status(absl::string_view data)>& sink,
    std::string* first_fields = nullptr);

}  // namespace lathe::client

#endif  // LATHE_CLIENT_FILE_STREAM_H_

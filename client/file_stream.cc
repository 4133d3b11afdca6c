#include "client/file_stream.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/client_callback.h>
#include <grpcpp/support/slice.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "common/status.h"

namespace lathe::client {
namespace {

// The wire format's limits: field numbers are 29 bits, a varint at most
// ten bytes. Groups nest no deeper than protobuf's own parser allows.
constexpr uint64_t kMaxFieldNumber = (1u << 29) - 1;
constexpr int kMaxVarintBytes = 10;
constexpr size_t kMaxGroupDepth = 100;

absl::Status Malformed(absl::string_view why) {
  return absl::DataLossError(
      absl::StrCat("malformed file stream message: ", why));
}

// Reads a message held in pieces as one run of bytes. It never reads past
// the last piece: every read checks left() first.
class Cursor {
 public:
  explicit Cursor(absl::Span<const absl::string_view> pieces)
      : pieces_(pieces) {
    for (absl::string_view p : pieces_) left_ += p.size();
    SkipEmpty();
  }

  uint64_t left() const { return left_; }

  // Reads a varint into `*value`, appending its bytes to `raw` when that is
  // not null. False when the bytes end inside it or it runs past ten bytes.
  bool ReadVarint(uint64_t* value, std::string* raw) {
    uint64_t result = 0;
    for (int i = 0; i < kMaxVarintBytes; ++i) {
      if (left_ == 0) return false;
      const auto byte = static_cast<uint8_t>(pieces_[index_][pos_]);
      Advance(1);
      if (raw != nullptr) raw->push_back(static_cast<char>(byte));
      // Bits past the 64th (of a tenth byte) are dropped, as protobuf does.
      result |= static_cast<uint64_t>(byte & 0x7f) << (7 * i);
      if (byte < 0x80) {
        *value = result;
        return true;
      }
    }
    return false;
  }

  // Hands the next `n` bytes (n <= left()) to `fn` one contiguous piece at
  // a time; stops at the first error `fn` gives.
  template <typename Fn>
  absl::Status Take(uint64_t n, Fn&& fn) {
    while (n > 0) {
      const absl::string_view piece = pieces_[index_];
      const size_t k = static_cast<size_t>(
          std::min<uint64_t>(n, static_cast<uint64_t>(piece.size() - pos_)));
      absl::Status s = fn(piece.substr(pos_, k));
      if (!s.ok()) return s;
      Advance(k);
      n -= k;
    }
    return absl::OkStatus();
  }

 private:
  // Moves on `n` bytes, all within the current piece.
  void Advance(size_t n) {
    pos_ += n;
    left_ -= n;
    SkipEmpty();
  }

  // Keeps (index_, pos_) on a byte whenever one is left.
  void SkipEmpty() {
    while (index_ < pieces_.size() && pos_ == pieces_[index_].size()) {
      ++index_;
      pos_ = 0;
    }
  }

  absl::Span<const absl::string_view> pieces_;
  size_t index_ = 0;
  size_t pos_ = 0;
  uint64_t left_ = 0;
};

enum WireType {
  kVarint = 0,
  kFixed64 = 1,
  kLengthDelimited = 2,
  kStartGroup = 3,
  kEndGroup = 4,
  kFixed32 = 5,
};

}  // namespace

absl::Status WalkFileStreamMessage(
    absl::Span<const absl::string_view> pieces,
    const std::function<absl::Status(int64_t offset, absl::string_view data)>&
        data,
    int64_t* offset, std::string* other) {
  Cursor in(pieces);
  *offset = 0;
  bool seen_data = false;
  // The field numbers of the groups the walk is inside, innermost last:
  // their fields belong to the group, not to the message, whatever their
  // numbers.
  std::vector<uint64_t> groups;
  auto keep = [other](absl::string_view bytes) {
    if (other != nullptr) other->append(bytes.data(), bytes.size());
    return absl::OkStatus();
  };
  std::string tag_bytes;
  while (in.left() > 0) {
    tag_bytes.clear();
    uint64_t tag = 0;
    if (!in.ReadVarint(&tag, &tag_bytes)) return Malformed("truncated tag");
    const uint64_t field = tag >> 3;
    const auto type = static_cast<int>(tag & 7);
    if (field == 0 || field > kMaxFieldNumber) {
      return Malformed(absl::StrCat("field number ", field));
    }
    if (groups.empty() && field == 1) {
      if (type != kVarint) return Malformed("the offset is not a varint");
      keep(tag_bytes).IgnoreError();
      uint64_t value = 0;
      if (!in.ReadVarint(&value, other)) return Malformed("truncated offset");
      *offset = static_cast<int64_t>(value);
      continue;
    }
    if (groups.empty() && field == 2) {
      if (type != kLengthDelimited) {
        return Malformed("the data is not length-delimited");
      }
      // Protobuf would keep the last one; a file stream never sends two, and
      // the first one's bytes would already have gone to `data`.
      if (seen_data) return Malformed("the data appears twice");
      seen_data = true;
      uint64_t n = 0;
      if (!in.ReadVarint(&n, nullptr)) return Malformed("truncated length");
      if (n > in.left()) return Malformed("the data runs past the end");
      const int64_t at = *offset;
      RETURN_IF_ERROR(
          in.Take(n, [&](absl::string_view piece) { return data(at, piece); }));
      continue;
    }
    // Any other field: kept (or skipped) whole, by its wire type.
    keep(tag_bytes).IgnoreError();
    switch (type) {
      case kVarint: {
        uint64_t value = 0;
        if (!in.ReadVarint(&value, other)) return Malformed("truncated varint");
        break;
      }
      case kFixed64:
      case kFixed32: {
        const uint64_t n = type == kFixed64 ? 8 : 4;
        if (n > in.left()) return Malformed("truncated fixed-size field");
        in.Take(n, keep).IgnoreError();
        break;
      }
      case kLengthDelimited: {
        uint64_t n = 0;
        if (!in.ReadVarint(&n, other)) return Malformed("truncated length");
        if (n > in.left()) return Malformed("a field runs past the end");
        in.Take(n, keep).IgnoreError();
        break;
      }
      case kStartGroup:
        if (groups.size() == kMaxGroupDepth) {
          return Malformed("groups nested too deep");
        }
        groups.push_back(field);
        break;
      case kEndGroup:
        if (groups.empty() || groups.back() != field) {
          return Malformed("a group ends that did not start");
        }
        groups.pop_back();
        break;
      default:
        return Malformed(absl::StrCat("wire type ", type));
    }
  }
  if (!groups.empty()) return Malformed("a group does not end");
  return absl::OkStatus();
}

namespace {

// One server-streaming call read through the generic (bytes in, bytes out)
// API. gRPC has no generic server-streaming call; a bidirectional one that
// sends the request and closes its side at once is the same on the wire.
// The reactions run on gRPC's threads; Wait() blocks the caller until the
// call is done.
class FileStreamReader final
    : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  FileStreamReader(grpc::ClientContext* ctx, int64_t offset,
                   const std::function<absl::Status(absl::string_view)>& sink,
                   std::string* first_fields)
      : ctx_(ctx),
        position_(offset),
        sink_(sink),
        first_fields_(first_fields) {}

  void Start(const std::shared_ptr<grpc::Channel>& channel,
             const std::string& method, const std::string& request) {
    grpc::Slice slice(request);
    request_ = grpc::ByteBuffer(&slice, 1);
    grpc::GenericStub stub(channel);
    stub.PrepareBidiStreamingCall(ctx_, method, grpc::StubOptions(), this);
    StartWriteLast(&request_, grpc::WriteOptions());
    StartRead(&message_);
    StartCall();
  }

  absl::Status Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [this] { return done_; });
    // After a cancel of ours the call's status only says CANCELLED; the
    // reason is error_.
    if (!error_.ok()) return error_;
    return FromGrpc(status_);
  }

  void OnReadDone(bool ok) override {
    // Not ok: the stream has ended; OnDone follows with its status.
    if (!ok) return;
    absl::Status s = Consume();
    // The message's memory goes back now, for the reads that follow.
    slices_.clear();
    message_.Clear();
    if (!s.ok()) {
      // Only this thread writes error_ while the call runs; OnDone's lock
      // publishes it to Wait().
      error_ = std::move(s);
      ctx_->TryCancel();
      return;
    }
    StartRead(&message_);
  }

  void OnDone(const grpc::Status& status) override {
    // The last reaction: after done_ is set, Wait() may return and this
    // reader be destroyed, so nothing follows the notify but the unlock.
    std::lock_guard<std::mutex> lock(mu_);
    status_ = status;
    done_ = true;
    done_cv_.notify_one();
  }

 private:
  // One message: its data to the sink, in place.
  absl::Status Consume() {
    // Takes references to the received slices; copies no bytes.
    if (!message_.Dump(&slices_).ok()) {
      return absl::InternalError("cannot read a file stream message");
    }
    pieces_.clear();
    for (const grpc::Slice& s : slices_) {
      pieces_.emplace_back(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    const int64_t start = position_;
    std::string* other = nullptr;
    if (first_) {
      first_ = false;
      if (first_fields_ != nullptr) {
        first_fields_->clear();
        other = first_fields_;
      }
    }
    auto out_of_order = [&](int64_t at) {
      return absl::DataLossError(absl::StrCat("file stream message at offset ",
                                              at, " arrived where offset ",
                                              start, " was due"));
    };
    int64_t offset = 0;
    RETURN_IF_ERROR(WalkFileStreamMessage(
        pieces_,
        [&](int64_t at, absl::string_view data) {
          if (at != start) return out_of_order(at);
          position_ += static_cast<int64_t>(data.size());
          return sink_(data);
        },
        &offset, other));
    // A message without data (or with its offset after the data) is
    // checked here.
    if (offset != start) return out_of_order(offset);
    return absl::OkStatus();
  }

  grpc::ClientContext* const ctx_;
  // Where the next message's data belongs in the file.
  int64_t position_;
  const std::function<absl::Status(absl::string_view)>& sink_;
  std::string* const first_fields_;
  bool first_ = true;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer message_;
  // Kept across messages so that reading one allocates nothing.
  std::vector<grpc::Slice> slices_;
  std::vector<absl::string_view> pieces_;
  absl::Status error_;

  std::mutex mu_;
  std::condition_variable done_cv_;
  bool done_ = false;
  grpc::Status status_;
};

}  // namespace

absl::Status ReadFileStream(
    const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
    const google::protobuf::Message& request, grpc::ClientContext* ctx,
    int64_t offset,
    const std::function<absl::Status(absl::string_view data)>& sink,
    std::string* first_fields) {
  std::string serialized;
  if (!request.SerializeToString(&serialized)) {
    return absl::InternalError("cannot serialize the request");
  }
  FileStreamReader reader(ctx, offset, sink, first_fields);
  reader.Start(channel, method, serialized);
  return reader.Wait();
}

}  // namespace lathe::client

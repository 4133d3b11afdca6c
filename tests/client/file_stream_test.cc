#include "client/file_stream.h"

#include <gmock/gmock.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lathe/v1/lathe.pb.h"

namespace lathe::client {
namespace {

using ::testing::HasSubstr;

std::string Varint(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
  return out;
}

std::string Tag(uint64_t field, int wire_type) {
  return Varint(field << 3 | static_cast<uint64_t>(wire_type));
}

std::string LengthDelimited(uint64_t field, const std::string& bytes) {
  return Tag(field, 2) + Varint(bytes.size()) + bytes;
}

// A message as the server could send it, built field by field: the data,
// the rest, and where each top-level field ends.
struct Built {
  std::string bytes;
  std::string data;
  std::string other;
  std::vector<size_t> field_ends;

  void Add(const std::string& field, bool is_data = false) {
    bytes += field;
    if (!is_data) other += field;
    field_ends.push_back(bytes.size());
  }
};

// Offset and file first, then a field of every wire type the message does
// not have (a group holding fields numbered 1 and 2 of other types among
// them), the data, and a field with a large number after it.
Built FullMessage() {
  lathe::v1::FileInfo file;
  file.set_name("model.safetensors");
  file.set_size(123456789);
  file.set_sha256(std::string(64, 'a'));
  Built m;
  m.Add(Tag(1, 0) + Varint(300000));
  m.Add(LengthDelimited(3, file.SerializeAsString()));
  m.Add(Tag(9, 1) + std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8));
  m.Add(Tag(10, 5) + std::string("\xff\xfe\xfd\xfc", 4));
  m.Add(Tag(11, 0) + Varint(~0ull));  // ten bytes
  m.Add(LengthDelimited(12, "unknown bytes"));
  m.Add(Tag(13, 3) + LengthDelimited(1, "in a group") + Tag(2, 0) + Varint(5) +
        Tag(13, 4));
  for (int i = 0; i < 40; ++i) m.data.push_back(static_cast<char>(i * 7));
  m.Add(LengthDelimited(2, m.data), /*is_data=*/true);
  m.Add(Tag(200000, 0) + Varint(1));
  return m;
}

// What a walk found.
struct Walked {
  absl::Status status;
  std::string data;
  int64_t offset = -1;
  std::string other;
  // Whether every data piece pointed into the input rather than a copy.
  bool in_place = true;
  // The offset each data call was told.
  std::vector<int64_t> data_offsets;
};

// Walks `bytes` cut at `cuts` (ascending; equal cuts give empty pieces).
// Each piece is an allocation of its own size (not a short string kept
// inside a string object), so that a read past a piece's end is a read
// past an allocation, which memory checkers see.
Walked Walk(const std::string& bytes, const std::vector<size_t>& cuts) {
  std::vector<std::unique_ptr<char[]>> owned;
  std::vector<absl::string_view> pieces;
  size_t at = 0;
  auto add = [&](size_t end) {
    owned.push_back(std::make_unique<char[]>(end - at));
    std::copy(bytes.begin() + at, bytes.begin() + end, owned.back().get());
    pieces.emplace_back(owned.back().get(), end - at);
    at = end;
  };
  for (size_t cut : cuts) add(cut);
  add(bytes.size());
  Walked w;
  w.status = WalkFileStreamMessage(
      pieces,
      [&](int64_t offset, absl::string_view data) {
        bool inside = false;
        for (absl::string_view p : pieces) {
          inside |= data.data() >= p.data() &&
                    data.data() + data.size() <= p.data() + p.size();
        }
        w.in_place &= inside;
        w.data_offsets.push_back(offset);
        w.data.append(data.data(), data.size());
        return absl::OkStatus();
      },
      &w.offset, &w.other);
  return w;
}

TEST(FileStreamWalkTest, ReadsAGeneratedMessageAsProtobufWould) {
  lathe::v1::DownloadCheckpointFileResponse msg;
  msg.set_offset(1ll << 40);
  msg.set_data(std::string(1000, 'x') + std::string(1000, 'y'));
  msg.mutable_file()->set_name("config.json");
  msg.mutable_file()->set_size(2000);
  const std::string bytes = msg.SerializeAsString();
  for (size_t cut = 0; cut <= bytes.size(); ++cut) {
    Walked w = Walk(bytes, {cut});
    ASSERT_TRUE(w.status.ok()) << w.status << " cut at " << cut;
    EXPECT_EQ(w.offset, msg.offset());
    EXPECT_EQ(w.data, msg.data());
    EXPECT_TRUE(w.in_place);
    lathe::v1::DownloadCheckpointFileResponse rest;
    ASSERT_TRUE(rest.ParseFromString(w.other));
    EXPECT_EQ(rest.offset(), msg.offset());
    EXPECT_EQ(rest.file().name(), "config.json");
    EXPECT_EQ(rest.file().size(), 2000);
    EXPECT_TRUE(rest.data().empty());
  }
}

TEST(FileStreamWalkTest, SkipsFieldsOfEveryWireTypeAndKeepsThemInOther) {
  const Built m = FullMessage();
  Walked w = Walk(m.bytes, {});
  ASSERT_TRUE(w.status.ok()) << w.status;
  EXPECT_EQ(w.offset, 300000);
  EXPECT_EQ(w.data, m.data);
  EXPECT_EQ(w.other, m.other);
  // The fields numbered 1 and 2 inside the group are the group's.
  EXPECT_EQ(w.data_offsets, std::vector<int64_t>{300000});
  lathe::v1::DownloadCheckpointFileResponse rest;
  ASSERT_TRUE(rest.ParseFromString(w.other));
  EXPECT_EQ(rest.offset(), 300000);
  EXPECT_EQ(rest.file().name(), "model.safetensors");
  EXPECT_EQ(rest.file().size(), 123456789);
}

TEST(FileStreamWalkTest, EverySplitIntoPiecesGivesTheSameResult) {
  const Built m = FullMessage();
  const size_t n = m.bytes.size();
  // Two and three pieces, cut at every pair of positions (empty pieces
  // included).
  for (size_t i = 0; i <= n; ++i) {
    for (size_t j = i; j <= n; ++j) {
      Walked w = Walk(m.bytes, {i, j});
      ASSERT_TRUE(w.status.ok()) << w.status << " cut at " << i << ", " << j;
      ASSERT_EQ(w.offset, 300000);
      ASSERT_EQ(w.data, m.data) << "cut at " << i << ", " << j;
      ASSERT_EQ(w.other, m.other) << "cut at " << i << ", " << j;
      ASSERT_TRUE(w.in_place);
      for (int64_t at : w.data_offsets) ASSERT_EQ(at, 300000);
    }
  }
  // One byte a piece.
  std::vector<size_t> every;
  for (size_t i = 1; i < n; ++i) every.push_back(i);
  Walked w = Walk(m.bytes, every);
  ASSERT_TRUE(w.status.ok()) << w.status;
  EXPECT_EQ(w.data, m.data);
  EXPECT_EQ(w.other, m.other);
  EXPECT_EQ(w.data_offsets.size(), m.data.size());
}

TEST(FileStreamWalkTest, EveryTruncationInsideAFieldIsDataLoss) {
  const Built m = FullMessage();
  for (size_t size = 0; size < m.bytes.size(); ++size) {
    const bool at_end_of_field =
        size == 0 || std::find(m.field_ends.begin(), m.field_ends.end(),
                               size) != m.field_ends.end();
    for (size_t cut = 0; cut <= size; cut += 7) {
      Walked w = Walk(m.bytes.substr(0, size), {cut});
      if (at_end_of_field) {
        EXPECT_TRUE(w.status.ok()) << w.status << " size " << size;
      } else {
        EXPECT_EQ(w.status.code(), absl::StatusCode::kDataLoss)
            << w.status << " size " << size;
        EXPECT_THAT(w.status.message(),
                    HasSubstr("malformed file stream message"));
      }
    }
  }
}

TEST(FileStreamWalkTest, MalformedMessagesAreDataLoss) {
  const std::string data = LengthDelimited(2, "abc");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"\x80", "truncated tag"},
      {Tag(1, 0) + "\xff\xff", "truncated offset"},
      {Tag(2, 2) + "\x80", "truncated length"},
      {Tag(2, 2) + Varint(4) + "abc", "the data runs past the end"},
      {Tag(2, 2) + Varint(~0ull) + "abc", "the data runs past the end"},
      {Tag(2, 0) + Varint(3), "the data is not length-delimited"},
      {Tag(1, 2) + Varint(1) + "x", "the offset is not a varint"},
      {data + data, "the data appears twice"},
      {Tag(7, 6), "wire type 6"},
      {Tag(7, 7), "wire type 7"},
      {Tag(0, 0) + Varint(1), "field number 0"},
      {Tag(1ull << 29, 0) + Varint(1), "field number"},
      {Tag(7, 4), "a group ends that did not start"},
      {Tag(7, 3) + Tag(8, 4), "a group ends that did not start"},
      {Tag(7, 3) + data, "a group does not end"},
      {Tag(7, 0) + std::string(10, '\xff') + "\x01", "truncated varint"},
      {Tag(7, 1) + "1234567", "truncated fixed-size field"},
      {Tag(7, 5) + "123", "truncated fixed-size field"},
      {Tag(7, 2) + Varint(5) + "1234", "a field runs past the end"},
  };
  for (const auto& [bytes, why] : cases) {
    Walked w = Walk(bytes, {});
    EXPECT_EQ(w.status.code(), absl::StatusCode::kDataLoss) << why;
    EXPECT_THAT(w.status.message(), HasSubstr(why));
  }
  // Deep nesting stops at a limit instead of growing without one.
  std::string deep;
  for (int i = 0; i < 1000; ++i) deep += Tag(7, 3);
  EXPECT_THAT(Walk(deep, {}).status.message(),
              HasSubstr("groups nested too deep"));
}

TEST(FileStreamWalkTest, TheDataCallsErrorStopsTheWalk) {
  const std::string bytes = LengthDelimited(2, "abcdef") + Tag(7, 0) + "\x80";
  std::vector<absl::string_view> pieces = {
      absl::string_view(bytes).substr(0, 4),
      absl::string_view(bytes).substr(4)};
  int calls = 0;
  int64_t offset = 0;
  absl::Status s = WalkFileStreamMessage(
      pieces,
      [&](int64_t, absl::string_view) {
        ++calls;
        return absl::ResourceExhaustedError("disk full");
      },
      &offset, nullptr);
  EXPECT_EQ(s, absl::ResourceExhaustedError("disk full"));
  EXPECT_EQ(calls, 1);
}

// A server for any method that answers each call with a script: the
// messages, each sent as two slices cut in the middle, then a status.
class ScriptedServer {
 public:
  struct Script {
    std::vector<std::string> messages;
    grpc::Status end;
  };

  explicit ScriptedServer(Script script) : service_(this) {
    script_ = std::move(script);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port_);
    builder.RegisterCallbackGenericService(&service_);
    server_ = builder.BuildAndStart();
  }

  ~ScriptedServer() {
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(5));
  }

  std::shared_ptr<grpc::Channel> Channel() const {
    return grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_),
                               grpc::InsecureChannelCredentials());
  }

  // Waits (up to 10 seconds) for the call to end on the server's side.
  bool WaitDone() {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return done_; });
  }

  std::string method() {
    std::lock_guard<std::mutex> lock(mu_);
    return method_;
  }
  std::string request() {
    std::lock_guard<std::mutex> lock(mu_);
    return request_;
  }
  bool cancelled() {
    std::lock_guard<std::mutex> lock(mu_);
    return cancelled_;
  }

 private:
  class Stream final : public grpc::ServerGenericBidiReactor {
   public:
    explicit Stream(ScriptedServer* server) : server_(server) {
      StartRead(&request_);
    }

    void OnReadDone(bool ok) override {
      if (ok) {
        grpc::Slice slice;
        request_.DumpToSingleSlice(&slice);
        std::lock_guard<std::mutex> lock(server_->mu_);
        server_->request_.assign(reinterpret_cast<const char*>(slice.begin()),
                                 slice.size());
      }
      Next();
    }

    void OnWriteDone(bool ok) override {
      if (!ok) {
        Finish(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
        return;
      }
      ++sent_;
      Next();
    }

    void OnCancel() override {
      std::lock_guard<std::mutex> lock(server_->mu_);
      server_->cancelled_ = true;
    }

    void OnDone() override {
      {
        std::lock_guard<std::mutex> lock(server_->mu_);
        server_->done_ = true;
        server_->cv_.notify_all();
      }
      delete this;
    }

   private:
    void Next() {
      const auto& messages = server_->script_.messages;
      if (sent_ == messages.size()) {
        Finish(server_->script_.end);
        return;
      }
      const std::string& m = messages[sent_];
      grpc::Slice slices[2] = {grpc::Slice(m.substr(0, m.size() / 2)),
                               grpc::Slice(m.substr(m.size() / 2))};
      message_ = grpc::ByteBuffer(slices, 2);
      StartWrite(&message_);
    }

    ScriptedServer* server_;
    grpc::ByteBuffer request_;
    grpc::ByteBuffer message_;
    size_t sent_ = 0;
  };

  class Service final : public grpc::CallbackGenericService {
   public:
    explicit Service(ScriptedServer* server) : server_(server) {}
    grpc::ServerGenericBidiReactor* CreateReactor(
        grpc::GenericCallbackServerContext* ctx) override {
      {
        std::lock_guard<std::mutex> lock(server_->mu_);
        server_->method_ = ctx->method();
      }
      return new Stream(server_);
    }

   private:
    ScriptedServer* server_;
  };

  Script script_;
  Service service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  bool cancelled_ = false;
  std::string method_;
  std::string request_;
};

const char kMethod[] = "/lathe.v1.JobService/DownloadCheckpointFile";

// A message of the stream: offset (left out at 0, as the server does) and
// data.
std::string Chunk(int64_t offset, const std::string& data,
                  const std::string& more = "") {
  std::string m;
  if (offset != 0) m += Tag(1, 0) + Varint(static_cast<uint64_t>(offset));
  return m + more + LengthDelimited(2, data);
}

// What ReadFileStream gave.
struct Read {
  absl::Status status;
  std::string data;
  std::string first;
};

Read ReadFrom(ScriptedServer& server, int64_t offset,
              absl::Status sink_error = absl::OkStatus()) {
  lathe::v1::DownloadCheckpointFileRequest req;
  req.set_job_id("job-1");
  req.set_file("model.safetensors");
  req.set_offset(offset);
  grpc::ClientContext ctx;
  Read r;
  r.status = ReadFileStream(
      server.Channel(), kMethod, req, &ctx, offset,
      [&](absl::string_view data) {
        r.data.append(data.data(), data.size());
        return sink_error;
      },
      &r.first);
  return r;
}

std::string Pattern(size_t n, int seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) {
    s[i] = static_cast<char>((i * 2654435761u + seed) >> 13);
  }
  return s;
}

TEST(ReadFileStreamTest, GivesTheFileFromTheOffsetAndTheFirstMessagesFields) {
  lathe::v1::DownloadCheckpointFileResponse first;
  first.mutable_file()->set_name("model.safetensors");
  first.mutable_file()->set_sha256(std::string(64, 'b'));
  // Messages of a few bytes and of megabytes (which arrive in many slices).
  const std::vector<std::string> parts = {Pattern(5, 1), Pattern(3 << 20, 2),
                                          "", Pattern(1 << 20, 3),
                                          Pattern(1, 4)};
  ScriptedServer::Script script;
  int64_t at = 1000;
  for (size_t i = 0; i < parts.size(); ++i) {
    script.messages.push_back(
        Chunk(at, parts[i], i == 0 ? first.SerializeAsString() : ""));
    at += static_cast<int64_t>(parts[i].size());
  }
  ScriptedServer server(std::move(script));
  Read r = ReadFrom(server, 1000);
  ASSERT_TRUE(r.status.ok()) << r.status;
  std::string want;
  for (const auto& p : parts) want += p;
  EXPECT_TRUE(r.data == want) << r.data.size() << " bytes, not " << want.size();
  lathe::v1::DownloadCheckpointFileResponse got;
  ASSERT_TRUE(got.ParseFromString(r.first));
  EXPECT_EQ(got.offset(), 1000);
  EXPECT_EQ(got.file().name(), "model.safetensors");
  EXPECT_EQ(got.file().sha256(), std::string(64, 'b'));
  EXPECT_TRUE(got.data().empty());
  // The server was asked for what the request said.
  EXPECT_EQ(server.method(), kMethod);
  lathe::v1::DownloadCheckpointFileRequest req;
  ASSERT_TRUE(req.ParseFromString(server.request()));
  EXPECT_EQ(req.job_id(), "job-1");
  EXPECT_EQ(req.offset(), 1000);
}

TEST(ReadFileStreamTest, AnEmptyFileIsOneMessageWithoutData) {
  lathe::v1::DownloadCheckpointFileResponse first;
  first.mutable_file()->set_name("empty.txt");
  ScriptedServer server({{first.SerializeAsString()}, grpc::Status::OK});
  Read r = ReadFrom(server, 0);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.data, "");
  lathe::v1::DownloadCheckpointFileResponse got;
  ASSERT_TRUE(got.ParseFromString(r.first));
  EXPECT_EQ(got.file().name(), "empty.txt");
}

TEST(ReadFileStreamTest, GivesTheServersStatus) {
  ScriptedServer server(
      {{Chunk(0, "abc")},
       grpc::Status(grpc::StatusCode::NOT_FOUND, "no such file")});
  Read r = ReadFrom(server, 0);
  EXPECT_EQ(r.status, absl::NotFoundError("no such file"));
  EXPECT_EQ(r.data, "abc");
}

// Enough messages that the server is still sending (held back by flow
// control) when the client gives up after the first.
std::vector<std::string> ManyChunksAfter(std::string first) {
  std::vector<std::string> messages = {std::move(first)};
  const std::string chunk = Chunk(0, Pattern(1 << 20, 0));
  messages.resize(65, chunk);
  return messages;
}

TEST(ReadFileStreamTest, AMessageOutOfOrderIsDataLossAndCancels) {
  ScriptedServer server({ManyChunksAfter(Chunk(5, "abc")), grpc::Status::OK});
  Read r = ReadFrom(server, 0);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kDataLoss) << r.status;
  EXPECT_THAT(r.status.message(),
              HasSubstr("at offset 5 arrived where offset 0 was due"));
  EXPECT_EQ(r.data, "");
  ASSERT_TRUE(server.WaitDone());
  EXPECT_TRUE(server.cancelled());
}

TEST(ReadFileStreamTest, AMessageWithoutDataMustStillBeInOrder) {
  ScriptedServer server(
      {{Chunk(0, "abc"), Tag(1, 0) + Varint(2)}, grpc::Status::OK});
  Read r = ReadFrom(server, 0);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kDataLoss) << r.status;
  EXPECT_THAT(r.status.message(), HasSubstr("where offset 3 was due"));
}

TEST(ReadFileStreamTest, AMalformedMessageIsDataLossAndCancels) {
  ScriptedServer server(
      {ManyChunksAfter(Tag(2, 2) + Varint(1000) + "abc"), grpc::Status::OK});
  Read r = ReadFrom(server, 0);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kDataLoss) << r.status;
  EXPECT_THAT(r.status.message(), HasSubstr("the data runs past the end"));
  ASSERT_TRUE(server.WaitDone());
  EXPECT_TRUE(server.cancelled());
}

TEST(ReadFileStreamTest, TheSinksErrorCancelsTheCall) {
  ScriptedServer server({ManyChunksAfter(Chunk(0, "abc")), grpc::Status::OK});
  Read r = ReadFrom(server, 0, absl::InternalError("cannot write x.part"));
  EXPECT_EQ(r.status, absl::InternalError("cannot write x.part"));
  EXPECT_EQ(r.data, "abc");
  ASSERT_TRUE(server.WaitDone());
  EXPECT_TRUE(server.cancelled());
}

}  // namespace
}  // namespace lathe::client

// GET /v1/jobs/ID/events as server-sent events: a WatchJob call read with
// gRPC's callback API, so that the listener's thread can wait for the next
// event with a deadline and send a keep-alive comment meanwhile. A client
// that went away is noticed at that comment, not at the job's next event,
// which for a queued or paused job may be hours away.
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/http/http_util.h"
#include "server/http/routes.h"

namespace lathe::server::http {

namespace {

constexpr absl::Duration kPing = absl::Seconds(15);

class WatchReader final
    : public grpc::ClientReadReactor<lathe::v1::WatchJobResponse> {
 public:
  enum class Next { kMessage, kTimeout, kEnd };

  explicit WatchReader(std::unique_ptr<grpc::ClientContext> ctx)
      : ctx_(std::move(ctx)) {}
  ~WatchReader() override { Close(); }

  grpc::ClientContext* context() { return ctx_.get(); }

  void Start(lathe::v1::JobService::Stub* stub,
             const lathe::v1::WatchJobRequest& req) {
    {
      absl::MutexLock lock(&mu_);
      started_ = true;
    }
    stub->async()->WatchJob(ctx_.get(), &req, this);
    StartRead(&incoming_);
    StartCall();
  }

  // The next message, waiting at most `timeout`.
  Next Take(lathe::v1::WatchJobResponse* out, absl::Duration timeout) {
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(this, &WatchReader::Ready), timeout);
      if (!has_message_) return done_ ? Next::kEnd : Next::kTimeout;
      *out = std::move(pending_);
      has_message_ = false;
    }
    // One message is held at a time: the next read starts once this one
    // is taken, so a slow client slows the stream, not the server's memory.
    StartRead(&incoming_);
    return Next::kMessage;
  }

  grpc::Status status() {
    absl::MutexLock lock(&mu_);
    return status_;
  }

  // Cancels the call and waits until gRPC is done with this object.
  void Close() {
    ctx_->TryCancel();
    absl::MutexLock lock(&mu_);
    if (started_) mu_.Await(absl::Condition(&done_));
  }

  void OnReadDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    if (ok) {
      pending_ = std::move(incoming_);
      has_message_ = true;
    }
  }
  void OnDone(const grpc::Status& s) override {
    absl::MutexLock lock(&mu_);
    status_ = s;
    done_ = true;
  }

 private:
  bool Ready() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return has_message_ || done_;
  }

  std::unique_ptr<grpc::ClientContext> ctx_;
  lathe::v1::WatchJobResponse incoming_;  // written by gRPC between reads
  absl::Mutex mu_;
  lathe::v1::WatchJobResponse pending_ ABSL_GUARDED_BY(mu_);
  bool has_message_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

void ServeEvents(Api& api, const httplib::Request& hreq, httplib::Response& res,
                 const lathe::v1::WatchJobRequest& req) {
  const std::string key = hreq.get_header_value("Authorization");
  auto reader = std::make_shared<WatchReader>(CallContext(hreq));
  if (!api.streams.Add(reader->context(), key)) {
    return WriteError(
        res, grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "too many open event streams: close some (each "
                          "dashboard tab on a job holds one)"));
  }
  struct Release {
    Api* api;
    std::shared_ptr<WatchReader> reader;
    std::string key;
    ~Release() {
      reader->Close();
      api->streams.Remove(reader->context(), key);
    }
  };
  std::shared_ptr<Release> held(new Release{&api, reader, key});
  reader->Start(api.jobs.get(), req);
  // The first message (the job as it is now) comes at once when the call
  // is admitted; a refused call ends here with its error.
  auto first = std::make_shared<lathe::v1::WatchJobResponse>();
  switch (reader->Take(first.get(), absl::Seconds(30))) {
    case WatchReader::Next::kMessage:
      break;
    case WatchReader::Next::kEnd: {
      grpc::Status s = reader->status();
      return WriteError(res, s.ok() ? grpc::Status(grpc::StatusCode::INTERNAL,
                                                   "the watch ended at once")
                                    : s);
    }
    case WatchReader::Next::kTimeout:
      return WriteError(res, grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                          "the job's events did not start"));
  }
  const int64_t after = req.after_seq();
  res.set_header("Cache-Control", "no-store");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider(
      "text/event-stream",
      [held, first, after](size_t, httplib::DataSink& sink) {
        lathe::v1::WatchJobResponse msg;
        if (first->has_job()) {
          msg = std::move(*first);
          first->Clear();
        } else {
          switch (held->reader->Take(&msg, kPing)) {
            case WatchReader::Next::kMessage:
              break;
            case WatchReader::Next::kTimeout: {
              // A comment: clients ignore it; a write to a client that went
              // away fails, which ends the stream.
              static constexpr char kComment[] = ": keep-alive\n\n";
              return sink.write(kComment, sizeof(kComment) - 1);
            }
            case WatchReader::Next::kEnd:
              sink.done();
              return true;
          }
        }
        // The first message, the job as it is, carries the position the
        // client asked to continue from.
        const int64_t seq = msg.has_event() ? msg.event().seq() : after;
        const std::string frame =
            absl::StrCat("id: ", seq, "\ndata: ", ToJson(msg), "\n\n");
        return sink.write(frame.data(), frame.size());
      },
      [held](bool) {});
}

}  // namespace lathe::server::http

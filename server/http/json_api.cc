// The native JSON API: each route is the gRPC method of the same meaning,
// called in-process on the caller's behalf (docs/api.md lists them).
#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/api/checkpoint_download.h"
#include "server/http/http_util.h"
#include "server/http/routes.h"

namespace lathe::server::http {

bool OpenStreams::Add(grpc::ClientContext* ctx, const std::string& key) {
  absl::MutexLock lock(&mu_);
  auto it = per_token_.find(key);
  const int mine = it == per_token_.end() ? 0 : it->second;
  if (static_cast<int>(open_.size()) >= kMax || mine >= kMaxPerToken) {
    return false;
  }
  if (closed_) ctx->TryCancel();
  open_.insert(ctx);
  ++per_token_[key];
  return true;
}

void OpenStreams::Remove(grpc::ClientContext* ctx, const std::string& key) {
  absl::MutexLock lock(&mu_);
  if (open_.erase(ctx) > 0 && --per_token_[key] <= 0) per_token_.erase(key);
}

void OpenStreams::CancelAll() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
  for (grpc::ClientContext* ctx : open_) ctx->TryCancel();
}

namespace {

using lathe::v1::JobService;

// A unary call: `call(ctx, request, &response)` on the in-process channel.
template <typename Resp, typename Req, typename Call>
void Unary(const httplib::Request& hreq, httplib::Response& res, const Req& req,
           Call call) {
  auto ctx = CallContext(hreq);
  Resp resp;
  grpc::Status s = call(ctx.get(), req, &resp);
  if (!s.ok()) return WriteError(res, s);
  WriteJson(res, resp);
}

grpc::Status ParseInt(const httplib::Request& req, const char* name,
                      int64_t* out) {
  if (!req.has_param(name)) return grpc::Status::OK;
  const std::string v = req.get_param_value(name);
  if (!absl::SimpleAtoi(v, out)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat(name, ": \"", v, "\" is not an integer"));
  }
  return grpc::Status::OK;
}

void Jobs(httplib::Server& server, Api& api) {
  server.Get("/v1/jobs", [&api](const httplib::Request& hreq,
                                httplib::Response& res) {
    lathe::v1::ListJobsRequest req;
    for (size_t i = 0; i < hreq.get_param_value_count("state"); ++i) {
      const std::string name = hreq.get_param_value("state", i);
      lathe::v1::JobState state;
      if (!lathe::v1::JobState_Parse(name, &state)) {
        return WriteError(res, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                            absl::StrCat("state: \"", name,
                                                         "\" is not a job "
                                                         "state")));
      }
      req.add_states(state);
    }
    req.set_owner(hreq.get_param_value("owner"));
    req.set_page_token(hreq.get_param_value("page_token"));
    req.set_after_id(hreq.get_param_value("after_id"));
    int64_t page_size = 0;
    if (grpc::Status s = ParseInt(hreq, "page_size", &page_size); !s.ok()) {
      return WriteError(res, s);
    }
    req.set_page_size(static_cast<int32_t>(
        std::max<int64_t>(-1, std::min<int64_t>(page_size, 1 << 30))));
    Unary<lathe::v1::ListJobsResponse>(hreq, res, req,
                                       [&](auto* ctx, auto& rq, auto* rs) {
                                         return api.jobs->ListJobs(ctx, rq, rs);
                                       });
  });
  server.Post("/v1/jobs",
              [&api](const httplib::Request& hreq, httplib::Response& res,
                     const httplib::ContentReader& reader) {
                std::string body;
                lathe::v1::SubmitJobRequest req;
                grpc::Status s = ReadBody(hreq, reader, kMaxJsonBody, &body);
                if (s.ok()) s = FromJson(body, &req);
                if (!s.ok()) return WriteError(res, s);
                Unary<lathe::v1::SubmitJobResponse>(
                    hreq, res, req, [&](auto* ctx, auto& rq, auto* rs) {
                      return api.jobs->SubmitJob(ctx, rq, rs);
                    });
              });
  server.Get(R"(/v1/jobs/([^/:]+))",
             [&api](const httplib::Request& hreq, httplib::Response& res) {
               lathe::v1::GetJobRequest req;
               req.set_id(hreq.matches[1]);
               Unary<lathe::v1::GetJobResponse>(
                   hreq, res, req, [&](auto* ctx, auto& rq, auto* rs) {
                     return api.jobs->GetJob(ctx, rq, rs);
                   });
             });
  // POST /v1/jobs/ID:cancel, :pause, :resume, :checkpoint.
  server.Post(
      R"(/v1/jobs/([^/:]+):(cancel|pause|resume|checkpoint))",
      [&api](const httplib::Request& hreq, httplib::Response& res,
             const httplib::ContentReader& reader) {
        std::string body;
        if (grpc::Status s = ReadBody(hreq, reader, kMaxJsonBody, &body);
            !s.ok()) {
          return WriteError(res, s);
        }
        const std::string id = hreq.matches[1];
        const std::string verb = hreq.matches[2];
        auto run = [&](auto req, auto resp_tag, auto method) {
          req.set_id(id);
          Unary<decltype(resp_tag)>(hreq, res, req,
                                    [&](auto* ctx, auto& rq, auto* rs) {
                                      return ((*api.jobs).*method)(ctx, rq, rs);
                                    });
        };
        if (verb == "cancel") {
          run(lathe::v1::CancelJobRequest(), lathe::v1::CancelJobResponse(),
              &JobService::Stub::CancelJob);
        } else if (verb == "pause") {
          run(lathe::v1::PauseJobRequest(), lathe::v1::PauseJobResponse(),
              &JobService::Stub::PauseJob);
        } else if (verb == "resume") {
          run(lathe::v1::ResumeJobRequest(), lathe::v1::ResumeJobResponse(),
              &JobService::Stub::ResumeJob);
        } else {
          run(lathe::v1::RequestCheckpointRequest(),
              lathe::v1::RequestCheckpointResponse(),
              &JobService::Stub::RequestCheckpoint);
        }
      });
  server.Get(R"(/v1/jobs/([^/:]+)/checkpoints)",
             [&api](const httplib::Request& hreq, httplib::Response& res) {
               lathe::v1::ListCheckpointsRequest req;
               req.set_job_id(hreq.matches[1]);
               Unary<lathe::v1::ListCheckpointsResponse>(
                   hreq, res, req, [&](auto* ctx, auto& rq, auto* rs) {
                     return api.jobs->ListCheckpoints(ctx, rq, rs);
                   });
             });
}

// GET /v1/jobs/ID/events: the job's events as server-sent events, one
// WatchJobResponse per message with the event's seq as its id. The stream
// ends when the job is final and every event was sent; a client that
// reconnects with Last-Event-ID (or ?after_seq=N) continues after it.
void Events(httplib::Server& server, Api& api) {
  server.Get(R"(/v1/jobs/([^/:]+)/events)", [&api](const httplib::Request& hreq,
                                                   httplib::Response& res) {
    lathe::v1::WatchJobRequest req;
    req.set_id(hreq.matches[1]);
    int64_t after = 0;
    if (grpc::Status s = ParseInt(hreq, "after_seq", &after); !s.ok()) {
      return WriteError(res, s);
    }
    if (const std::string last = hreq.get_header_value("Last-Event-ID");
        !last.empty() && !absl::SimpleAtoi(last, &after)) {
      return WriteError(res, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                          "Last-Event-ID: not an integer"));
    }
    req.set_after_seq(after);
    // A client that asks for JSON gets the events as they are now.
    const std::string accept = hreq.get_header_value("Accept");
    if (accept.find("application/json") != std::string::npos &&
        accept.find("text/event-stream") == std::string::npos) {
      lathe::v1::ListJobEventsRequest list;
      list.set_id(req.id());
      list.set_after_seq(after);
      int64_t limit = 0;
      if (grpc::Status s = ParseInt(hreq, "limit", &limit); !s.ok()) {
        return WriteError(res, s);
      }
      list.set_limit(static_cast<int32_t>(
          std::max<int64_t>(-1, std::min<int64_t>(limit, 1 << 30))));
      return Unary<lathe::v1::ListJobEventsResponse>(
          hreq, res, list, [&](auto* ctx, auto& rq, auto* rs) {
            return api.jobs->ListJobEvents(ctx, rq, rs);
          });
    }
    ServeEvents(api, hreq, res, req);
  });
}

// `attachment` with the file's base name: letters, digits, '.', '-' and
// '_' as they are in `filename`, every byte in the RFC 5987 `filename*`.
std::string Disposition(const std::string& name) {
  const std::string base = name.substr(name.rfind('/') + 1);
  std::string plain, encoded;
  for (unsigned char c : base) {
    const bool safe = std::isalnum(c) || c == '.' || c == '-' || c == '_';
    plain += safe ? static_cast<char>(c) : '_';
    if (safe) {
      encoded += static_cast<char>(c);
    } else {
      absl::StrAppend(&encoded, absl::StrFormat("%%%02X", c));
    }
  }
  return absl::StrCat("attachment; filename=\"", plain, "\"; filename*=UTF-8''",
                      encoded);
}

// GET /v1/jobs/ID/checkpoints/(STEP|latest|best)/files/NAME: the file's
// bytes, with Range, ETag (its SHA-256) and Content-Length; read from the
// artifact store 1 MiB at a time, never whole.
void Files(httplib::Server& server, Api& api) {
  server.Get(
      R"(/v1/jobs/([^/:]+)/checkpoints/([^/]+)/files/(.+))",
      [&api](const httplib::Request& hreq, httplib::Response& res) {
        // The range is applied here, never by the library (which would also
        // cut an error answer to it).
        const httplib::Ranges ranges = hreq.ranges;
        const_cast<httplib::Request&>(hreq).ranges.clear();
        std::shared_ptr<CheckpointDownload> d = CheckpointDownload::Open(
            api.gate, hreq.get_header_value("Authorization"),
            absl::StrCat("http:", hreq.remote_addr, ":", hreq.remote_port),
            hreq.matches[1], hreq.matches[2], hreq.matches[3]);
        if (!d->status().ok()) {
          return WriteError(res, ToGrpcStatus(d->status()));
        }
        const int fd = ::open(d->path().c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
          d->Finish(absl::DataLossError("the stored file cannot be opened"));
          return WriteError(
              res, grpc::Status(grpc::StatusCode::DATA_LOSS,
                                "the stored checkpoint file cannot be opened"));
        }
        const std::string etag = absl::StrCat("\"", d->info().sha256(), "\"");
        res.set_header("ETag", etag);
        res.set_header("Cache-Control", "private, no-cache");
        res.set_header("Content-Disposition", Disposition(d->info().name()));
        if (hreq.get_header_value("If-None-Match") == etag) {
          ::close(fd);
          d->Finish(absl::OkStatus());
          res.status = 304;
          return;
        }
        // One range is served as asked; several, or a Range that an
        // If-Range for other content cancels, get the whole file (as HTTP
        // allows). The library's own range handling is bypassed: it neither
        // answers 416 nor stops a range at the end of the file.
        const int64_t size = d->info().size();
        int64_t start = 0;
        int64_t end = size;  // exclusive
        const std::string if_range = hreq.get_header_value("If-Range");
        if (ranges.size() == 1 && (if_range.empty() || if_range == etag)) {
          const auto [first, last] = ranges[0];
          if (first < 0) {  // the last `last` bytes
            start = std::max<int64_t>(0, size - last);
          } else {
            start = first;
            if (last >= 0 && last < size) end = last + 1;
          }
          if (start >= size || start >= end) {
            ::close(fd);
            d->Finish(absl::OutOfRangeError("range past the end"));
            WriteError(res, grpc::Status(grpc::StatusCode::OUT_OF_RANGE,
                                         absl::StrCat("Range: the file has ",
                                                      size, " bytes")));
            res.status = 416;
            res.set_header("Content-Range", absl::StrCat("bytes */", size));
            return;
          }
          res.status = 206;
          res.set_header("Content-Range", absl::StrCat("bytes ", start, "-",
                                                       end - 1, "/", size));
        }
        res.set_header("Accept-Ranges", "bytes");
        if (size == 0) {  // nothing to stream
          ::close(fd);
          d->Finish(absl::OkStatus());
          res.set_content("", "application/octet-stream");
          return;
        }
        auto buffer = std::make_shared<std::string>(1 << 20, '\0');
        res.set_content_provider(
            static_cast<size_t>(end - start), "application/octet-stream",
            [fd, buffer, start](size_t offset, size_t length,
                                httplib::DataSink& sink) {
              const size_t want = std::min(length, buffer->size());
              const ssize_t n = ::pread(
                  fd, buffer->data(), want,
                  static_cast<off_t>(start + static_cast<int64_t>(offset)));
              if (n <= 0) return false;
              return sink.write(buffer->data(), static_cast<size_t>(n));
            },
            [fd, d](bool success) {
              ::close(fd);
              d->Finish(success ? absl::OkStatus()
                                : absl::CancelledError("download stopped"));
            });
      });
}

// POST /v1/datasets?name=NAME with the file's bytes as the body.
void Datasets(httplib::Server& server, Api& api) {
  server.Post("/v1/datasets", [&api](const httplib::Request& hreq,
                                     httplib::Response& res,
                                     const httplib::ContentReader& reader) {
    auto ctx = CallContext(hreq);
    lathe::v1::UploadDatasetResponse resp;
    auto writer = api.datasets->UploadDataset(ctx.get(), &resp);
    lathe::v1::UploadDatasetRequest msg;
    msg.set_name(hreq.get_param_value("name"));
    if (hreq.is_multipart_form_data()) {
      ctx->TryCancel();
      (void)writer->Finish();
      return WriteError(res, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                          "Content-Type: send the file's "
                                          "bytes as the body, not multipart"));
    }
    bool open = true;
    const bool complete = reader([&](const char* data, size_t n) {
      msg.mutable_chunk()->append(data, n);
      if (msg.chunk().size() < (1 << 20)) return true;
      open = writer->Write(msg);
      msg.Clear();
      return open;
    });
    if (open && !complete) {
      // Cut off, or past the size limit: nothing is stored.
      ctx->TryCancel();
      (void)writer->Finish();
      return WriteError(
          res, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "request body: incomplete, or larger than the "
                            "server's upload limit (--max-upload-mb)"));
    }
    if (open) (void)writer->Write(msg);
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    if (!s.ok()) return WriteError(res, s);
    WriteJson(res, resp);
  });
}

void DatasetList(httplib::Server& server, Api& api) {
  server.Get("/v1/datasets",
             [&api](const httplib::Request& hreq, httplib::Response& res) {
               Unary<lathe::v1::ListDatasetsResponse>(
                   hreq, res, lathe::v1::ListDatasetsRequest(),
                   [&](auto* ctx, auto& rq, auto* rs) {
                     return api.datasets->ListDatasets(ctx, rq, rs);
                   });
             });
  server.Get(R"(/v1/datasets/([^/]+))",
             [&api](const httplib::Request& hreq, httplib::Response& res) {
               lathe::v1::GetDatasetRequest req;
               req.set_ref(hreq.matches[1]);
               Unary<lathe::v1::GetDatasetResponse>(
                   hreq, res, req, [&](auto* ctx, auto& rq, auto* rs) {
                     return api.datasets->GetDataset(ctx, rq, rs);
                   });
             });
  server.Delete(R"(/v1/datasets/([^/]+))",
                [&api](const httplib::Request& hreq, httplib::Response& res) {
                  lathe::v1::DeleteDatasetRequest req;
                  req.set_ref(hreq.matches[1]);
                  Unary<lathe::v1::DeleteDatasetResponse>(
                      hreq, res, req, [&](auto* ctx, auto& rq, auto* rs) {
                        return api.datasets->DeleteDataset(ctx, rq, rs);
                      });
                });
}

void Models(httplib::Server& server, Api& api) {
  server.Get("/v1/models",
             [&api](const httplib::Request& hreq, httplib::Response& res) {
               Unary<lathe::v1::ListModelsResponse>(
                   hreq, res, lathe::v1::ListModelsRequest(),
                   [&](auto* ctx, auto& rq, auto* rs) {
                     return api.models->ListModels(ctx, rq, rs);
                   });
             });
  server.Get(R"(/v1/models/([^/]+))",
             [&api](const httplib::Request& hreq, httplib::Response& res) {
               lathe::v1::GetModelRequest req;
               req.set_name(hreq.matches[1]);
               Unary<lathe::v1::GetModelResponse>(
                   hreq, res, req, [&](auto* ctx, auto& rq, auto* rs) {
                     return api.models->GetModel(ctx, rq, rs);
                   });
             });
  server.Delete(R"(/v1/models/([^/]+))",
                [&api](const httplib::Request& hreq, httplib::Response& res) {
                  lathe::v1::DeleteModelRequest req;
                  req.set_name(hreq.matches[1]);
                  Unary<lathe::v1::DeleteModelResponse>(
                      hreq, res, req, [&](auto* ctx, auto& rq, auto* rs) {
                        return api.models->DeleteModel(ctx, rq, rs);
                      });
                });
  server.Get("/v1/workers",
             [&api](const httplib::Request& hreq, httplib::Response& res) {
               Unary<lathe::v1::ListWorkersResponse>(
                   hreq, res, lathe::v1::ListWorkersRequest(),
                   [&](auto* ctx, auto& rq, auto* rs) {
                     return api.jobs->ListWorkers(ctx, rq, rs);
                   });
             });
  server.Get("/v1/whoami", [&api](const httplib::Request& hreq,
                                  httplib::Response& res) {
    Unary<lathe::v1::WhoAmIResponse>(hreq, res, lathe::v1::WhoAmIRequest(),
                                     [&](auto* ctx, auto& rq, auto* rs) {
                                       return api.admin->WhoAmI(ctx, rq, rs);
                                     });
  });
}

}  // namespace

void AddJsonApi(httplib::Server& server, Api& api) {
  Jobs(server, api);
  Events(server, api);
  Files(server, api);
  Datasets(server, api);
  DatasetList(server, api);
  Models(server, api);
}

}  // namespace lathe::server::http

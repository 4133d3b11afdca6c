// The OpenAI-compatible subset: Files and fine-tuning jobs in OpenAI's
// object shapes, so that code written for OpenAI's fine-tuning API runs
// against Lathe with another base URL and key. Each route translates its
// request into the Lathe call of the same meaning (in-process, as the JSON
// API does) and the answer back; docs/api.md says what is not supported.
#include <algorithm>
#include <cctype>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "server/http/http_util.h"
#include "server/http/routes.h"

namespace lathe::server::http {

namespace {

using nlohmann::json;

// Lathe's default peak learning rate (docs/params.md): a
// learning_rate_multiplier scales it.
constexpr double kBaseLearningRate = 1e-4;
// Labels Lathe keeps for itself on jobs made here.
constexpr char kSuffixLabel[] = "openai.suffix";
constexpr char kFilePrefix[] = "file-";
constexpr char kDatasetPrefix[] = "dataset:";

grpc::Status Invalid(const std::string& field, const std::string& what) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                      absl::StrCat(field, ": ", what));
}

json Seconds(int64_t ms) { return ms > 0 ? json(ms / 1000) : json(nullptr); }

// "file-<sha256>" for a dataset reference (a path or URI stays as it is).
json FileId(const std::string& ref) {
  if (ref.empty()) return nullptr;
  if (ref.rfind(kDatasetPrefix, 0) == 0) {
    return absl::StrCat(kFilePrefix, ref.substr(strlen(kDatasetPrefix)));
  }
  return ref;
}

// A dataset reference for a file id; Lathe's own references pass through.
grpc::Status DatasetRef(const std::string& field, const std::string& id,
                        std::string* ref) {
  if (id.rfind(kFilePrefix, 0) == 0) {
    const std::string sha = id.substr(strlen(kFilePrefix));
    if (sha.size() != 64 ||
        sha.find_first_not_of("0123456789abcdef") != std::string::npos) {
      return Invalid(field, absl::StrCat("\"", id, "\" is not a file id"));
    }
    *ref = absl::StrCat(kDatasetPrefix, sha);
    return grpc::Status::OK;
  }
  if (id.rfind(kDatasetPrefix, 0) == 0 || id.rfind("file://", 0) == 0 ||
      id.rfind("/", 0) == 0) {
    *ref = id;
    return grpc::Status::OK;
  }
  return Invalid(field, absl::StrCat("\"", id, "\" is not a file id"));
}

json FileObject(const lathe::v1::Dataset& d) {
  return {{"id", absl::StrCat(kFilePrefix, d.sha256())},
          {"object", "file"},
          {"bytes", d.size()},
          {"created_at", d.create_time_ms() / 1000},
          {"filename", d.name()},
          {"purpose", "fine-tune"},
          {"status", "processed"},
          {"status_details", nullptr}};
}

const char* StatusOf(lathe::v1::JobState state) {
  switch (state) {
    case lathe::v1::QUEUED:
      return "queued";
    case lathe::v1::RUNNING:
    case lathe::v1::PAUSING:
      return "running";
    case lathe::v1::SUCCEEDED:
      return "succeeded";
    case lathe::v1::FAILED:
      return "failed";
    // A cancel is settled once asked for: the job stops at its next step.
    case lathe::v1::CANCELLING:
    case lathe::v1::CANCELLED:
      return "cancelled";
    case lathe::v1::PAUSED:
      return "paused";
    default:
      return "queued";
  }
}

// A parameter as OpenAI shows it: the number the job uses, or "auto" when
// the job takes Lathe's default.
json Hyperparameters(const lathe::v1::JobSpec& spec) {
  auto number = [&](const char* name) -> json {
    auto it = spec.params().find(name);
    if (it == spec.params().end()) return "auto";
    int64_t i;
    if (absl::SimpleAtoi(it->second, &i)) return i;
    return it->second;
  };
  json multiplier = "auto";
  if (auto it = spec.params().find("learning_rate");
      it != spec.params().end()) {
    double lr;
    if (absl::SimpleAtod(it->second, &lr)) {
      multiplier = lr / kBaseLearningRate;
    }
  }
  return {{"n_epochs", number("epochs")},
          {"batch_size", number("batch_size")},
          {"learning_rate_multiplier", multiplier}};
}

// The job's method as OpenAI names it: "dpo" for Lathe's preference methods
// (with their beta), else "supervised".
json Method(const lathe::v1::JobSpec& spec, const json& hp) {
  auto method = spec.params().find("method");
  if (method == spec.params().end() ||
      (method->second != "dpo" && method->second != "dpo-lora")) {
    return {{"type", "supervised"}, {"supervised", {{"hyperparameters", hp}}}};
  }
  json dpo_hp = hp;
  dpo_hp["beta"] = "auto";
  if (auto it = spec.params().find("dpo_beta"); it != spec.params().end()) {
    double beta;
    if (absl::SimpleAtod(it->second, &beta)) dpo_hp["beta"] = beta;
  }
  return {{"type", "dpo"}, {"dpo", {{"hyperparameters", dpo_hp}}}};
}

json JobObject(const lathe::v1::Job& job) {
  const auto& spec = job.spec();
  json metadata = json::object();
  for (const auto& [k, v] : spec.labels()) {
    if (k != kSuffixLabel) metadata[k] = v;
  }
  auto suffix = spec.labels().find(kSuffixLabel);
  int64_t seed = 42;
  if (auto it = spec.params().find("seed"); it != spec.params().end()) {
    (void)absl::SimpleAtoi(it->second, &seed);
  }
  json error = nullptr;
  if (job.state() == lathe::v1::FAILED) {
    error = {
        {"code", "job_failed"}, {"message", job.error()}, {"param", nullptr}};
  }
  json estimated = nullptr;
  if (job.state() == lathe::v1::RUNNING &&
      job.train_metrics().eta_seconds() > 0) {
    estimated = absl::ToUnixSeconds(absl::Now()) +
                static_cast<int64_t>(job.train_metrics().eta_seconds());
  }
  const json hp = Hyperparameters(spec);
  return {
      {"object", "fine_tuning.job"},
      {"id", job.id()},
      {"model", spec.model()},
      {"created_at", job.create_time_ms() / 1000},
      {"finished_at", Seconds(job.end_time_ms())},
      {"fine_tuned_model", job.state() == lathe::v1::SUCCEEDED
                               ? json(absl::StrCat("job:", job.id()))
                               : json(nullptr)},
      {"organization_id", job.team()},
      {"result_files", json::array()},
      {"status", StatusOf(job.state())},
      {"training_file", FileId(spec.train_data())},
      {"validation_file", FileId(spec.validation_data())},
      {"hyperparameters", hp},
      {"trained_tokens", nullptr},
      {"error", error},
      {"seed", seed},
      {"estimated_finish", estimated},
      {"integrations", json::array()},
      {"metadata", metadata.empty() ? json(nullptr) : metadata},
      {"method", Method(spec, hp)},
      {"user_provided_suffix",
       suffix == spec.labels().end() ? json(nullptr) : json(suffix->second)},
  };
}

void Reply(httplib::Response& res, const json& body) {
  res.status = 200;
  res.set_content(DumpJson(body), "application/json");
}

json List(json data, bool has_more) {
  json out = {{"object", "list"}, {"data", data}, {"has_more", has_more}};
  out["first_id"] = data.empty() ? json(nullptr) : data.front()["id"];
  out["last_id"] = data.empty() ? json(nullptr) : data.back()["id"];
  return out;
}

// ?limit=N within [1, max], `fallback` when absent.
grpc::Status Limit(const httplib::Request& req, int fallback, int max,
                   int* out) {
  *out = fallback;
  if (!req.has_param("limit")) return grpc::Status::OK;
  int64_t v;
  if (!absl::SimpleAtoi(req.get_param_value("limit"), &v) || v < 1 || v > max) {
    return Invalid("limit",
                   absl::StrCat("must be an integer in [1, ", max, "]"));
  }
  *out = static_cast<int>(v);
  return grpc::Status::OK;
}

// Sets params[name] from an OpenAI hyperparameter: a number in [lo, hi] or
// "auto" (Lathe's default).
grpc::Status IntParam(const json& hp, const char* key, const char* field,
                      const char* name, int64_t lo, int64_t hi,
                      lathe::v1::JobSpec* spec) {
  if (!hp.contains(key) || hp[key].is_null() || hp[key] == "auto") {
    return grpc::Status::OK;
  }
  if (!hp[key].is_number_integer() || hp[key].get<int64_t>() < lo ||
      hp[key].get<int64_t>() > hi) {
    return Invalid(field, absl::StrCat("must be \"auto\" or an integer in [",
                                       lo, ", ", hi, "]"));
  }
  (*spec->mutable_params())[name] = absl::StrCat(hp[key].get<int64_t>());
  return grpc::Status::OK;
}

// The body of POST /v1/fine_tuning/jobs as a Lathe submit.
grpc::Status ToSubmit(const json& body, lathe::v1::SubmitJobRequest* req) {
  if (!body.is_object()) return Invalid("body", "must be a JSON object");
  lathe::v1::JobSpec* spec = req->mutable_spec();
  spec->set_task("causal-lm");
  if (!body.contains("model") || !body["model"].is_string() ||
      body["model"].get<std::string>().empty()) {
    return Invalid("model", "is required (a Lathe model reference)");
  }
  spec->set_model(body["model"].get<std::string>());
  if (!body.contains("training_file") || !body["training_file"].is_string()) {
    return Invalid("training_file", "is required (a file id)");
  }
  std::string ref;
  if (auto s = DatasetRef("training_file", body["training_file"], &ref);
      !s.ok()) {
    return s;
  }
  spec->set_train_data(ref);
  if (body.contains("validation_file") && !body["validation_file"].is_null()) {
    if (!body["validation_file"].is_string()) {
      return Invalid("validation_file", "must be a file id");
    }
    if (auto s = DatasetRef("validation_file", body["validation_file"], &ref);
        !s.ok()) {
      return s;
    }
    spec->set_validation_data(ref);
  }
  json hp =
      body.contains("hyperparameters") && !body["hyperparameters"].is_null()
          ? body["hyperparameters"]
          : json::object();
  std::string prefix = "hyperparameters";
  if (body.contains("method") && !body["method"].is_null()) {
    const json& method = body["method"];
    if (!method.is_object()) return Invalid("method", "must be an object");
    if (method.contains("type") && !method["type"].is_string()) {
      return Invalid("method.type", "must be a string");
    }
    const std::string type = method.value("type", "supervised");
    if (type != "supervised" && type != "dpo") {
      return Invalid("method.type",
                     absl::StrCat("\"", type,
                                  "\" is not supported: Lathe runs supervised "
                                  "and dpo fine-tuning here"));
    }
    if (method.contains(type) && method[type].is_object() &&
        method[type].contains("hyperparameters")) {
      hp = method[type]["hyperparameters"];
      prefix = absl::StrCat("method.", type, ".hyperparameters");
    }
    if (type == "dpo") {
      // OpenAI's preference rows: {"input": {"messages": [...]},
      // "preferred_output": [...], "non_preferred_output": [...]}.
      auto& params = *spec->mutable_params();
      params["method"] = "dpo";
      params["prompt_column"] = "input";
      params["chosen_column"] = "preferred_output";
      params["rejected_column"] = "non_preferred_output";
      if (hp.is_object() && hp.contains("beta") && !hp["beta"].is_null() &&
          hp["beta"] != "auto") {
        const json& beta = hp["beta"];
        if (!beta.is_number() || beta.get<double>() <= 0 ||
            beta.get<double>() > 100) {
          return Invalid(prefix + ".beta",
                         "must be \"auto\" or a number in (0, 100]");
        }
        params["dpo_beta"] = absl::StrFormat("%.9g", beta.get<double>());
      }
    }
  }
  if (!hp.is_object()) return Invalid(prefix, "must be an object");
  if (auto s = IntParam(hp, "n_epochs", (prefix + ".n_epochs").c_str(),
                        "epochs", 1, 1000, spec);
      !s.ok()) {
    return s;
  }
  if (auto s = IntParam(hp, "batch_size", (prefix + ".batch_size").c_str(),
                        "batch_size", 1, 4096, spec);
      !s.ok()) {
    return s;
  }
  if (hp.contains("learning_rate_multiplier") &&
      !hp["learning_rate_multiplier"].is_null() &&
      hp["learning_rate_multiplier"] != "auto") {
    const json& m = hp["learning_rate_multiplier"];
    if (!m.is_number() || m.get<double>() <= 0 || m.get<double>() > 1000) {
      return Invalid(prefix + ".learning_rate_multiplier",
                     "must be \"auto\" or a number in (0, 1000]");
    }
    (*spec->mutable_params())["learning_rate"] =
        absl::StrFormat("%.9g", kBaseLearningRate * m.get<double>());
  }
  if (body.contains("seed") && !body["seed"].is_null()) {
    if (!body["seed"].is_number_integer()) {
      return Invalid("seed", "must be an integer");
    }
    (*spec->mutable_params())["seed"] =
        absl::StrCat(body["seed"].get<int64_t>());
  }
  if (body.contains("suffix") && !body["suffix"].is_null()) {
    if (!body["suffix"].is_string() ||
        body["suffix"].get<std::string>().size() > 64) {
      return Invalid("suffix", "must be a string of at most 64 characters");
    }
    (*spec->mutable_labels())[kSuffixLabel] = body["suffix"];
  }
  if (body.contains("metadata") && !body["metadata"].is_null()) {
    const json& md = body["metadata"];
    if (!md.is_object() || md.size() > 16) {
      return Invalid("metadata", "must be an object of at most 16 strings");
    }
    for (const auto& [k, v] : md.items()) {
      if (!v.is_string() || k.size() > 64 ||
          v.get<std::string>().size() > 512) {
        return Invalid("metadata", absl::StrCat("\"", k,
                                                "\": keys of at most 64 and "
                                                "string values of at most 512 "
                                                "characters"));
      }
      (*spec->mutable_labels())[k] = v.get<std::string>();
    }
  }
  return grpc::Status::OK;
}

json EventObject(const std::string& job_id, const lathe::v1::Event& e) {
  std::string message = e.message();
  std::string type = "message";
  std::string level = "info";
  json data = json::object();
  switch (e.type()) {
    case lathe::v1::EVENT_TYPE_STATE: {
      std::string state = lathe::v1::JobState_Name(e.state());
      for (char& c : state) c = static_cast<char>(std::tolower(c));
      message = absl::StrCat("Job ", state, e.message().empty() ? "" : ": ",
                             e.message());
      if (e.state() == lathe::v1::FAILED) level = "error";
      break;
    }
    case lathe::v1::EVENT_TYPE_TRAIN_METRICS:
      type = "metrics";
      message =
          absl::StrFormat("Step %d/%d: training loss=%.4f", e.train().step(),
                          e.train().total_steps(), e.train().loss());
      data = {{"step", e.train().step()},
              {"total_steps", e.train().total_steps()},
              {"train_loss", e.train().loss()},
              {"learning_rate", e.train().learning_rate()},
              {"epoch", e.train().epoch()}};
      break;
    case lathe::v1::EVENT_TYPE_EVAL_METRICS: {
      type = "metrics";
      data = {{"step", e.step()}};
      std::string parts;
      for (const auto& [k, v] : e.eval()) {
        data[k == "loss" ? "valid_loss" : k] = v;
        if (k == "loss" || k == "token_accuracy" || k == "accuracy" ||
            k == "reward_accuracy") {
          absl::StrAppend(&parts, " ", k, "=", absl::StrFormat("%.4f", v));
        }
      }
      message = absl::StrCat("Step ", e.step(), ": evaluation", parts);
      break;
    }
    case lathe::v1::EVENT_TYPE_CHECKPOINT:
      message =
          absl::StrCat("Checkpoint saved at step ", e.checkpoint().step());
      data = {{"step", e.checkpoint().step()}};
      break;
    default:
      if (absl::StrContains(e.message(), "error") ||
          absl::StrContains(e.message(), "failed")) {
        level = "warn";
      }
      break;
  }
  return {{"object", "fine_tuning.job.event"},
          {"id", absl::StrCat("ftevent-", job_id, "-", e.seq())},
          {"created_at", e.time_ms() / 1000},
          {"level", level},
          {"message", message},
          {"data", data},
          {"type", type}};
}

json CheckpointObject(const std::string& job_id,
                      const lathe::v1::Checkpoint& c) {
  json metrics = {{"step", c.step()}};
  for (const auto& [k, v] : c.metrics()) {
    if (k == "loss") {
      metrics["valid_loss"] = v;
      metrics["full_valid_loss"] = v;
    } else if (k == "token_accuracy") {
      metrics["valid_mean_token_accuracy"] = v;
      metrics["full_valid_mean_token_accuracy"] = v;
    } else {
      metrics[k] = v;
    }
  }
  return {{"object", "fine_tuning.job.checkpoint"},
          {"id", absl::StrCat("ftckpt-", job_id, "-", c.step())},
          {"created_at", c.create_time_ms() / 1000},
          {"fine_tuned_model_checkpoint",
           absl::StrCat("job:", job_id, "@", c.step())},
          {"step_number", c.step()},
          {"metrics", metrics},
          {"fine_tuning_job_id", job_id}};
}

// The part after "<prefix><job id>-" of an event or checkpoint id.
grpc::Status NumberAfter(const std::string& field, const std::string& id,
                         const std::string& prefix, int64_t* out) {
  const size_t dash = id.rfind('-');
  if (id.rfind(prefix, 0) != 0 || dash == std::string::npos ||
      !absl::SimpleAtoi(id.substr(dash + 1), out)) {
    return Invalid(field, absl::StrCat("\"", id,
                                       "\" is not an id of this "
                                       "list"));
  }
  return grpc::Status::OK;
}

void Files(httplib::Server& server, Api& api) {
  server.Post("/v1/files", [&api](const httplib::Request& hreq,
                                  httplib::Response& res,
                                  const httplib::ContentReader& reader) {
    if (!hreq.is_multipart_form_data()) {
      return WriteError(res, Invalid("file",
                                     "send multipart/form-data with "
                                     "`file` and `purpose`"));
    }
    auto ctx = CallContext(hreq);
    lathe::v1::UploadDatasetResponse resp;
    std::unique_ptr<grpc::ClientWriter<lathe::v1::UploadDatasetRequest>> writer;
    lathe::v1::UploadDatasetRequest msg;
    std::string part, purpose;
    bool open = true, has_file = false;
    const bool complete = reader(
        [&](const httplib::MultipartFormData& header) {
          part = header.name;
          if (part == "file") {
            if (has_file) return false;
            has_file = true;
            writer = api.datasets->UploadDataset(ctx.get(), &resp);
            msg.set_name(header.filename);
          }
          return true;
        },
        [&](const char* data, size_t n) {
          if (part == "purpose") {
            if (purpose.size() + n > 64) return false;
            purpose.append(data, n);
            return true;
          }
          if (part != "file" || !open) return true;
          msg.mutable_chunk()->append(data, n);
          if (msg.chunk().size() < (1 << 20)) return true;
          open = writer->Write(msg);
          msg.Clear();
          return open;
        });
    if (!has_file) {
      if (writer) {
        ctx->TryCancel();
        (void)writer->Finish();
      }
      return WriteError(res, Invalid("file", complete ? "is required"
                                                      : "the body stopped "
                                                        "short"));
    }
    if (open && !complete) {
      // Cut off, or past the size limit: nothing is stored.
      ctx->TryCancel();
      (void)writer->Finish();
      return WriteError(res, Invalid("file",
                                     "the body stopped short, or is larger "
                                     "than the server's upload limit "
                                     "(--max-upload-mb)"));
    }
    if (open) (void)writer->Write(msg);
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    if (!s.ok()) return WriteError(res, s);
    if (purpose != "fine-tune") {
      // Stored by content: take it back off the team's list, unless the
      // team had these bytes before.
      auto undo = CallContext(hreq);
      lathe::v1::DeleteDatasetRequest del;
      del.set_ref(resp.dataset().ref());
      lathe::v1::DeleteDatasetResponse gone;
      if (resp.created()) {
        (void)api.datasets->DeleteDataset(undo.get(), del, &gone);
      }
      return WriteError(res,
                        Invalid("purpose", absl::StrCat("\"", purpose,
                                                        "\" is not supported: "
                                                        "Lathe takes fine-tune "
                                                        "files")));
    }
    Reply(res, FileObject(resp.dataset()));
  });
  server.Get("/v1/files",
             [&api](const httplib::Request& hreq, httplib::Response& res) {
               int limit;
               if (auto s = Limit(hreq, 10000, 10000, &limit); !s.ok()) {
                 return WriteError(res, s);
               }
               auto ctx = CallContext(hreq);
               lathe::v1::ListDatasetsResponse resp;
               auto s = api.datasets->ListDatasets(ctx.get(), {}, &resp);
               if (!s.ok()) return WriteError(res, s);
               const std::string after = hreq.get_param_value("after");
               const bool oldest_first = hreq.get_param_value("order") == "asc";
               std::vector<const lathe::v1::Dataset*> all;
               for (const auto& d : resp.datasets()) all.push_back(&d);
               if (oldest_first) std::reverse(all.begin(), all.end());
               json data = json::array();
               bool started = after.empty(), more = false;
               for (const auto* d : all) {
                 if (!started) {
                   started = absl::StrCat(kFilePrefix, d->sha256()) == after;
                   continue;
                 }
                 if (static_cast<int>(data.size()) == limit) {
                   more = true;
                   break;
                 }
                 data.push_back(FileObject(*d));
               }
               Reply(res, List(data, more));
             });
  server.Get(R"(/v1/files/([^/]+))", [&api](const httplib::Request& hreq,
                                            httplib::Response& res) {
    lathe::v1::GetDatasetRequest req;
    std::string ref;
    if (auto s = DatasetRef("file_id", hreq.matches[1], &ref); !s.ok()) {
      return WriteError(res, s);
    }
    req.set_ref(ref);
    auto ctx = CallContext(hreq);
    lathe::v1::GetDatasetResponse resp;
    auto s = api.datasets->GetDataset(ctx.get(), req, &resp);
    if (!s.ok()) return WriteError(res, s);
    Reply(res, FileObject(resp.dataset()));
  });
  server.Delete(R"(/v1/files/([^/]+))", [&api](const httplib::Request& hreq,
                                               httplib::Response& res) {
    lathe::v1::DeleteDatasetRequest req;
    std::string ref;
    if (auto s = DatasetRef("file_id", hreq.matches[1], &ref); !s.ok()) {
      return WriteError(res, s);
    }
    req.set_ref(ref);
    auto ctx = CallContext(hreq);
    lathe::v1::DeleteDatasetResponse resp;
    auto s = api.datasets->DeleteDataset(ctx.get(), req, &resp);
    if (!s.ok()) return WriteError(res, s);
    Reply(res, {{"id", std::string(hreq.matches[1])},
                {"object", "file"},
                {"deleted", true}});
  });
}

void Jobs(httplib::Server& server, Api& api) {
  server.Post(
      "/v1/fine_tuning/jobs",
      [&api](const httplib::Request& hreq, httplib::Response& res,
             const httplib::ContentReader& reader) {
        std::string body;
        if (auto s = ReadBody(hreq, reader, kMaxJsonBody, &body); !s.ok()) {
          return WriteError(res, s);
        }
        json parsed = json::parse(body, nullptr, false);
        if (parsed.is_discarded()) {
          return WriteError(res, Invalid("body", "is not JSON"));
        }
        lathe::v1::SubmitJobRequest req;
        if (auto s = ToSubmit(parsed, &req); !s.ok()) return WriteError(res, s);
        // A retried create with the same key returns the first job.
        const std::string key = hreq.get_header_value("Idempotency-Key");
        if (!key.empty() && key.size() <= 128) req.set_request_id(key);
        auto ctx = CallContext(hreq);
        lathe::v1::SubmitJobResponse resp;
        auto s = api.jobs->SubmitJob(ctx.get(), req, &resp);
        if (!s.ok()) return WriteError(res, s);
        Reply(res, JobObject(resp.job()));
      });
  server.Get("/v1/fine_tuning/jobs",
             [&api](const httplib::Request& hreq, httplib::Response& res) {
               int limit;
               if (auto s = Limit(hreq, 20, 1000, &limit); !s.ok()) {
                 return WriteError(res, s);
               }
               lathe::v1::ListJobsRequest req;
               req.set_page_size(limit);
               req.set_after_id(hreq.get_param_value("after"));
               auto ctx = CallContext(hreq);
               lathe::v1::ListJobsResponse resp;
               auto s = api.jobs->ListJobs(ctx.get(), req, &resp);
               if (!s.ok()) return WriteError(res, s);
               json data = json::array();
               for (const auto& j : resp.jobs()) data.push_back(JobObject(j));
               Reply(res, List(data, !resp.next_page_token().empty()));
             });
  server.Get(R"(/v1/fine_tuning/jobs/([^/]+))",
             [&api](const httplib::Request& hreq, httplib::Response& res) {
               lathe::v1::GetJobRequest req;
               req.set_id(hreq.matches[1]);
               auto ctx = CallContext(hreq);
               lathe::v1::GetJobResponse resp;
               auto s = api.jobs->GetJob(ctx.get(), req, &resp);
               if (!s.ok()) return WriteError(res, s);
               Reply(res, JobObject(resp.job()));
             });
  server.Post(R"(/v1/fine_tuning/jobs/([^/]+)/(cancel|pause|resume))",
              [&api](const httplib::Request& hreq, httplib::Response& res,
                     const httplib::ContentReader& reader) {
                std::string body;
                if (auto s = ReadBody(hreq, reader, kMaxJsonBody, &body);
                    !s.ok()) {
                  return WriteError(res, s);
                }
                const std::string id = hreq.matches[1];
                const std::string verb = hreq.matches[2];
                auto ctx = CallContext(hreq);
                lathe::v1::Job job;
                grpc::Status s;
                if (verb == "cancel") {
                  lathe::v1::CancelJobRequest req;
                  req.set_id(id);
                  lathe::v1::CancelJobResponse resp;
                  s = api.jobs->CancelJob(ctx.get(), req, &resp);
                  job = resp.job();
                } else if (verb == "pause") {
                  lathe::v1::PauseJobRequest req;
                  req.set_id(id);
                  lathe::v1::PauseJobResponse resp;
                  s = api.jobs->PauseJob(ctx.get(), req, &resp);
                  job = resp.job();
                } else {
                  lathe::v1::ResumeJobRequest req;
                  req.set_id(id);
                  lathe::v1::ResumeJobResponse resp;
                  s = api.jobs->ResumeJob(ctx.get(), req, &resp);
                  job = resp.job();
                }
                if (!s.ok()) return WriteError(res, s);
                Reply(res, JobObject(job));
              });
  // Newest first, as OpenAI lists them; `after` is an event id.
  server.Get(
      R"(/v1/fine_tuning/jobs/([^/]+)/events)",
      [&api](const httplib::Request& hreq, httplib::Response& res) {
        const std::string id = hreq.matches[1];
        int limit;
        if (auto s = Limit(hreq, 20, 1000, &limit); !s.ok()) {
          return WriteError(res, s);
        }
        lathe::v1::GetJobRequest get;
        get.set_id(id);
        lathe::v1::GetJobResponse job;
        auto ctx = CallContext(hreq);
        if (auto s = api.jobs->GetJob(ctx.get(), get, &job); !s.ok()) {
          return WriteError(res, s);
        }
        // Event numbers run 1..last without gaps: the page is (lower, upper].
        int64_t upper = job.job().last_event_seq();
        if (hreq.has_param("after")) {
          int64_t seq;
          if (auto s = NumberAfter("after", hreq.get_param_value("after"),
                                   "ftevent-", &seq);
              !s.ok()) {
            return WriteError(res, s);
          }
          upper = std::min(upper, seq - 1);
        }
        const int64_t lower = std::max<int64_t>(0, upper - limit);
        json data = json::array();
        if (upper > lower) {
          lathe::v1::ListJobEventsRequest req;
          req.set_id(id);
          req.set_after_seq(lower);
          req.set_limit(static_cast<int32_t>(upper - lower));
          lathe::v1::ListJobEventsResponse resp;
          auto list_ctx = CallContext(hreq);
          if (auto s = api.jobs->ListJobEvents(list_ctx.get(), req, &resp);
              !s.ok()) {
            return WriteError(res, s);
          }
          for (int i = resp.events_size() - 1; i >= 0; --i) {
            data.push_back(EventObject(id, resp.events(i)));
          }
        }
        Reply(res, List(data, lower > 0));
      });
  server.Get(
      R"(/v1/fine_tuning/jobs/([^/]+)/checkpoints)",
      [&api](const httplib::Request& hreq, httplib::Response& res) {
        const std::string id = hreq.matches[1];
        int limit;
        if (auto s = Limit(hreq, 10, 1000, &limit); !s.ok()) {
          return WriteError(res, s);
        }
        int64_t after = INT64_MAX;
        if (hreq.has_param("after")) {
          if (auto s = NumberAfter("after", hreq.get_param_value("after"),
                                   "ftckpt-", &after);
              !s.ok()) {
            return WriteError(res, s);
          }
        }
        lathe::v1::ListCheckpointsRequest req;
        req.set_job_id(id);
        auto ctx = CallContext(hreq);
        lathe::v1::ListCheckpointsResponse resp;
        auto s = api.jobs->ListCheckpoints(ctx.get(), req, &resp);
        if (!s.ok()) return WriteError(res, s);
        json data = json::array();
        bool more = false;
        for (int i = resp.checkpoints_size() - 1; i >= 0; --i) {
          const auto& c = resp.checkpoints(i);
          if (c.step() >= after) continue;
          if (static_cast<int>(data.size()) == limit) {
            more = true;
            break;
          }
          data.push_back(CheckpointObject(id, c));
        }
        Reply(res, List(data, more));
      });
}

}  // namespace

void AddOpenAiApi(httplib::Server& server, Api& api) {
  Files(server, api);
  Jobs(server, api);
}

}  // namespace lathe::server::http

// lathe: the command-line client.
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/client.h"
#include "client/tokenize_command.h"
#include "common/status.h"

namespace lathe::client {
namespace {

constexpr char kUsage[] =
    R"(usage: lathe [--server HOST:PORT] [--output text|json] COMMAND ...

Commands:
  submit --task TASK --model MODEL --train-data DATA [--validation-data DATA]
         [--param NAME=VALUE ...] [--device cpu|cuda:N] [--owner NAME]
         [--label KEY=VALUE ...] [--request-id ID] [--priority N]
         [--max-attempts N] [--devices N] [--min-device-memory-mb MB]
                             submit a job; DATA is a local file (uploaded),
                             a dataset:<sha256> reference or a file:// URI;
                             MODEL is a stored model's name, a preset
                             (preset:bert-tiny, preset:bert-mini,
                             preset:gpt2-tiny, preset:llama-tiny,
                             preset:llama-mini, preset:vit-tiny,
                             preset:cnn-small), job:ID
                             (that job's best checkpoint), job:ID@STEP, or
                             an absolute directory path / file:// URI the
                             server may read
  list [--state STATE ...] [--owner NAME] [--page-size N] [--page-token T]
  get JOB                    show a job
  watch JOB [--after-seq N]  follow a job live until it ends
  wait JOB [--timeout SECONDS]
                             block until the job ends; exit 0 only if it
                             SUCCEEDED
  cancel JOB
  pause JOB                  checkpoint a running job and release its worker
  resume JOB                 queue a paused job again; it continues from its
                             latest checkpoint
  checkpoint-now JOB         ask a running job for a checkpoint now
  checkpoints JOB            list checkpoints with metrics and files
  download JOB --dest DIR [--checkpoint latest|best|STEP]
                             download a checkpoint and verify its SHA-256s
  predict MODEL --input FILE [--task TASK] [--param NAME=VALUE ...]
         [--device cpu|cuda:N] [--timeout SECONDS]
                             run a fine-tuned model (job:ID, job:ID@STEP,
                             a stored model or a directory) on a worker over
                             the rows of FILE (the training format; labels
                             ignored) and print one JSON object per row;
                             TASK defaults to the job's for job:ID
  datasets upload FILE [--name NAME]
  models push DIR --name NAME [--replace]
                             store a model directory (config.json and
                             model.safetensors; no pickles) under NAME
  models list                stored models (name, digest, size, created)
                             and the presets
  models delete NAME         remove NAME; jobs already submitted still run
  tokenize --tokenizer DIR [--jsonl] [--no-special-tokens] < LINES
                             encode each line offline: one JSON object of
                             ids and code point offsets per line

The server is --server, else $LATHE_SERVER, else 127.0.0.1:50051.
--output json prints protobuf's JSON mapping with the proto field names.
Tasks (--task): text-classification, text-regression, token-classification,
question-answering, causal-lm, masked-lm, image-classification.
Hyperparameters (--param): see docs/params.md (or submit an unknown name: the
error lists them all).
)";

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::vector<std::string>> options;

  std::string Get(const std::string& name, const std::string& def = "") const {
    auto it = options.find(name);
    return it == options.end() || it->second.empty() ? def : it->second.back();
  }
  const std::vector<std::string>& All(const std::string& name) const {
    static const std::vector<std::string> kEmpty;
    auto it = options.find(name);
    return it == options.end() ? kEmpty : it->second;
  }
};

absl::StatusOr<Args> ParseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    if (s.rfind("--", 0) == 0 && s.size() > 2) {
      std::string name = s.substr(2), value;
      auto eq = name.find('=');
      if (eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
      } else if (name == "help" || name == "replace") {
        value = "1";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, " needs a value"));
      }
      a.options[name].push_back(value);
    } else {
      a.positional.push_back(s);
    }
  }
  return a;
}

bool json_output = false;

std::string ToJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  o.always_print_primitive_fields = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

std::unique_ptr<grpc::ClientContext> Ctx(int seconds = 30) {
  auto c = std::make_unique<grpc::ClientContext>();
  if (seconds > 0) {
    c->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::seconds(seconds));
  }
  return c;
}

std::string FormatDuration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "--:--";
  int64_t s = static_cast<int64_t>(std::llround(seconds));
  if (s >= 3600)
    return absl::StrFormat("%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string MetricsText(const google::protobuf::Map<std::string, double>& m) {
  std::map<std::string, double> sorted(m.begin(), m.end());
  std::vector<std::string> parts;
  for (const auto& [k, v] : sorted)
    parts.push_back(absl::StrFormat("%s=%.4f", k, v));
  return absl::StrJoin(parts, " ");
}

void PrintJobText(const lathe::v1::Job& j) {
  std::cout << "job:        " << j.id() << "\n"
            << "state:      " << lathe::v1::JobState_Name(j.state()) << "\n"
            << "task:       " << j.spec().task() << "\n"
            << "model:      " << j.spec().model() << "\n"
            << "train data: " << j.train_dataset().name() << " ("
            << j.train_dataset().ref() << ")\n";
  if (!j.validation_dataset().ref().empty()) {
    std::cout << "validation: " << j.validation_dataset().name() << " ("
              << j.validation_dataset().ref() << ")\n";
  }
  if (j.spec().priority() != 0) {
    std::cout << "priority:   " << j.spec().priority() << "\n";
  }
  if (j.queue_position() > 0) {
    std::cout << "queue:      position " << j.queue_position();
    if (j.estimated_start_time_ms() > 0) {
      const double in_s =
          static_cast<double>(j.estimated_start_time_ms() - NowMs()) / 1000.0;
      std::cout << ", estimated start in "
                << FormatDuration(std::max(0.0, in_s));
    }
    std::cout << "\n";
  }
  if (j.attempt() > 0) {
    std::cout << "attempt:    " << j.attempt() << " on " << j.worker_id()
              << "\n";
  }
  const auto& t = j.train_metrics();
  if (t.total_steps() > 0) {
    std::cout << absl::StrFormat(
        "progress:   step %d/%d  loss %.4f  lr %.3g  %.1f samples/s\n",
        t.step(), t.total_steps(), t.loss(), t.learning_rate(),
        t.samples_per_second());
  }
  if (!j.eval_metrics().empty()) {
    std::cout << "evaluation: " << MetricsText(j.eval_metrics()) << "\n";
  }
  if (!j.error().empty()) std::cout << "error:      " << j.error() << "\n";
}

int Fail(const absl::Status& s) {
  std::cerr << "lathe: " << absl::StatusCodeToString(s.code()) << ": "
            << s.message() << "\n";
  return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

bool ParseKeyValues(const std::vector<std::string>& items, const char* flag,
                    google::protobuf::Map<std::string, std::string>* out) {
  for (const auto& kv : items) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::cerr << "lathe: --" << flag << " takes NAME=VALUE, got \"" << kv
                << "\"\n";
      return false;
    }
    (*out)[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return true;
}

int Submit(Client& c, const Args& a) {
  lathe::v1::SubmitJobRequest req;
  auto* spec = req.mutable_spec();
  spec->set_task(a.Get("task"));
  spec->set_model(a.Get("model"));
  spec->set_device(a.Get("device"));
  spec->set_owner(
      a.Get("owner", std::getenv("USER") ? std::getenv("USER") : ""));
  req.set_request_id(a.Get("request-id"));
  for (auto [flag, setter] :
       {std::pair<const char*, std::function<void(int64_t)>>{
            "priority",
            [&](int64_t v) { spec->set_priority(static_cast<int32_t>(v)); }},
        {"max-attempts",
         [&](int64_t v) { spec->set_max_attempts(static_cast<int32_t>(v)); }},
        {"devices",
         [&](int64_t v) {
           spec->mutable_resources()->set_device_count(static_cast<int32_t>(v));
         }},
        {"min-device-memory-mb", [&](int64_t v) {
           spec->mutable_resources()->set_min_device_memory_mb(v);
         }}}) {
    const std::string text = a.Get(flag);
    if (text.empty()) continue;
    int64_t v = 0;
    if (!absl::SimpleAtoi(text, &v) || v < INT32_MIN || v > INT32_MAX) {
      std::cerr << "lathe: --" << flag << " must be an integer\n";
      return 2;
    }
    setter(v);
  }
  if (!ParseKeyValues(a.All("param"), "param", spec->mutable_params()) ||
      !ParseKeyValues(a.All("label"), "label", spec->mutable_labels())) {
    return 2;
  }
  // Local files are uploaded first; their references go into the spec.
  for (auto [flag, setter] :
       {std::pair<const char*,
                  void (lathe::v1::JobSpec::*)(const std::string&)>{
            "train-data", &lathe::v1::JobSpec::set_train_data},
        {"validation-data", &lathe::v1::JobSpec::set_validation_data}}) {
    auto ref = c.ResolveData(a.Get(flag));
    if (!ref.ok()) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": ", ref.status().message())));
    }
    (spec->*setter)(*ref);
  }
  lathe::v1::SubmitJobResponse resp;
  auto ctx = Ctx(120);
  auto s = FromGrpc(c.jobs().SubmitJob(ctx.get(), req, &resp));
  if (!s.ok()) return Fail(s);
  if (json_output) {
    std::cout << ToJson(resp.job()) << "\n";
  } else {
    std::cout << "submitted " << resp.job().id() << "\n";
  }
  return 0;
}

absl::StatusOr<lathe::v1::Job> GetJob(Client& c, const std::string& id) {
  lathe::v1::GetJobRequest req;
  req.set_id(id);
  lathe::v1::GetJobResponse resp;
  auto ctx = Ctx();
  RETURN_IF_ERROR(FromGrpc(c.jobs().GetJob(ctx.get(), req, &resp)));
  return resp.job();
}

int List(Client& c, const Args& a) {
  lathe::v1::ListJobsRequest req;
  for (const auto& s : a.All("state")) {
    lathe::v1::JobState st;
    if (!lathe::v1::JobState_Parse(s, &st)) {
      std::cerr << "lathe: --state: unknown state " << s << "\n";
      return 2;
    }
    req.add_states(st);
  }
  req.set_owner(a.Get("owner"));
  int n = 0;
  if (!a.Get("page-size").empty() &&
      !absl::SimpleAtoi(a.Get("page-size"), &n)) {
    std::cerr << "lathe: --page-size must be an integer\n";
    return 2;
  }
  req.set_page_size(n);
  req.set_page_token(a.Get("page-token"));
  lathe::v1::ListJobsResponse resp;
  auto ctx = Ctx();
  auto s = FromGrpc(c.jobs().ListJobs(ctx.get(), req, &resp));
  if (!s.ok()) return Fail(s);
  if (json_output) {
    std::cout << ToJson(resp) << "\n";
    return 0;
  }
  std::cout << absl::StrFormat("%-17s %-11s %-20s %-12s %s\n", "JOB", "STATE",
                               "TASK", "PROGRESS", "EVAL");
  for (const auto& j : resp.jobs()) {
    std::string progress = j.queue_position() > 0
                               ? absl::StrCat("queue #", j.queue_position())
                           : j.train_metrics().total_steps() > 0
                               ? absl::StrCat(j.train_metrics().step(), "/",
                                              j.train_metrics().total_steps())
                               : "-";
    std::cout << absl::StrFormat("%-17s %-11s %-20s %-12s %s\n", j.id(),
                                 lathe::v1::JobState_Name(j.state()),
                                 j.spec().task(), progress,
                                 MetricsText(j.eval_metrics()));
  }
  if (!resp.next_page_token().empty()) {
    std::cout << "more: --page-token " << resp.next_page_token() << "\n";
  }
  return 0;
}

bool IsFinal(lathe::v1::JobState s) {
  return s == lathe::v1::SUCCEEDED || s == lathe::v1::FAILED ||
         s == lathe::v1::CANCELLED;
}

// Renders one line of live progress: bar, step/total, loss, throughput, ETA.
std::string ProgressLine(const lathe::v1::TrainMetrics& t) {
  const int width = 30;
  double frac = t.total_steps() > 0 ? static_cast<double>(t.step()) /
                                          static_cast<double>(t.total_steps())
                                    : 0.0;
  int filled = static_cast<int>(frac * width);
  std::string bar = std::string(filled, '#') + std::string(width - filled, '.');
  return absl::StrFormat(
      "[%s] %3.0f%% step %d/%d  loss %.4f  %.1f samples/s  ETA %s", bar,
      frac * 100, t.step(), t.total_steps(), t.loss(), t.samples_per_second(),
      FormatDuration(t.eta_seconds()));
}

int Watch(Client& c, const std::string& id, int64_t after_seq) {
  const bool tty = ::isatty(1);
  lathe::v1::Job last;
  bool progress_open = false;  // a progress line is on screen without newline
  auto end_progress = [&] {
    if (progress_open) std::cout << "\n";
    progress_open = false;
  };
  // Reconnects (resuming after the last seen event) if the stream breaks.
  for (int tries = 0; tries < 30; ++tries) {
    lathe::v1::WatchJobRequest req;
    req.set_id(id);
    req.set_after_seq(after_seq);
    grpc::ClientContext ctx;
    auto reader = c.jobs().WatchJob(&ctx, req);
    lathe::v1::WatchJobResponse r;
    while (reader->Read(&r)) {
      tries = 0;
      last = r.job();
      if (json_output) {
        std::cout << ToJson(r) << std::endl;
        if (r.has_event()) after_seq = r.event().seq();
        continue;
      }
      if (!r.has_event()) continue;
      const auto& e = r.event();
      after_seq = e.seq();
      switch (e.type()) {
        case lathe::v1::EVENT_TYPE_TRAIN_METRICS:
          if (tty) {
            std::cout << "\r" << ProgressLine(e.train()) << "\x1b[K"
                      << std::flush;
            progress_open = true;
          } else {
            std::cout << ProgressLine(e.train()) << std::endl;
          }
          break;
        case lathe::v1::EVENT_TYPE_STATE:
          end_progress();
          std::cout << "state " << lathe::v1::JobState_Name(e.state()) << ": "
                    << e.message() << std::endl;
          break;
        case lathe::v1::EVENT_TYPE_EVAL_METRICS:
          end_progress();
          std::cout << "eval at step " << e.step() << ": "
                    << MetricsText(e.eval()) << std::endl;
          break;
        case lathe::v1::EVENT_TYPE_CHECKPOINT:
          end_progress();
          std::cout << "checkpoint at step " << e.checkpoint().step() << " ("
                    << e.checkpoint().files_size() << " files)" << std::endl;
          break;
        default:
          end_progress();
          std::cout << "log: " << e.message() << std::endl;
      }
    }
    auto s = FromGrpc(reader->Finish());
    if (s.ok() || IsFinal(last.state())) break;
    if (s.code() != absl::StatusCode::kUnavailable) return Fail(s);
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  end_progress();
  if (!IsFinal(last.state())) {
    return Fail(absl::UnavailableError("lost the connection to the server"));
  }
  if (!json_output) {
    std::cout << "job " << id << " " << lathe::v1::JobState_Name(last.state());
    if (!last.error().empty()) std::cout << ": " << last.error();
    std::cout << "\n";
  }
  return last.state() == lathe::v1::SUCCEEDED ? 0 : 1;
}

// Blocks until job `id` ends (or `timeout_s` passes, when positive) and
// returns it; DEADLINE_EXCEEDED on timeout.
absl::StatusOr<lathe::v1::Job> AwaitJob(Client& c, const std::string& id,
                                        double timeout_s) {
  const auto start = std::chrono::steady_clock::now();
  while (true) {
    auto job = GetJob(c, id);
    if (!job.ok() && job.status().code() != absl::StatusCode::kUnavailable) {
      return job.status();
    }
    if (job.ok() && IsFinal(job->state())) return *job;
    if (timeout_s > 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
                .count() > timeout_s) {
      return absl::DeadlineExceededError(
          absl::StrCat("timed out waiting for ", id));
    }
    lathe::v1::WatchJobRequest req;
    req.set_id(id);
    req.set_after_seq(job.ok() ? job->last_event_seq() : 0);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(5));
    auto reader = c.jobs().WatchJob(&ctx, req);
    lathe::v1::WatchJobResponse r;
    while (reader->Read(&r)) {
      if (IsFinal(r.job().state())) break;
    }
    ctx.TryCancel();
    reader->Finish();
  }
}

int Predict(Client& c, const Args& a) {
  if (a.positional.size() != 2 || a.Get("input").empty()) {
    std::cerr << "lathe: usage: lathe predict MODEL --input FILE [--task "
                 "TASK] [--param NAME=VALUE ...]\n";
    return 2;
  }
  const std::string model = a.positional[1];
  std::string task = a.Get("task");
  if (task.empty()) {
    if (model.rfind("job:", 0) != 0) {
      std::cerr << "lathe: --task is needed for a model that is not job:ID\n";
      return 2;
    }
    std::string source = model.substr(4);
    source = source.substr(0, source.find('@'));
    auto job = GetJob(c, source);
    if (!job.ok()) return Fail(job.status());
    task = job->spec().task();
  }
  double timeout = 0;
  if (!a.Get("timeout").empty() &&
      !absl::SimpleAtod(a.Get("timeout"), &timeout)) {
    std::cerr << "lathe: --timeout must be a number of seconds\n";
    return 2;
  }
  lathe::v1::SubmitJobRequest req;
  auto* spec = req.mutable_spec();
  spec->set_kind(lathe::v1::JOB_KIND_PREDICT);
  spec->set_task(task);
  spec->set_model(model);
  spec->set_device(a.Get("device"));
  spec->set_owner(
      a.Get("owner", std::getenv("USER") ? std::getenv("USER") : ""));
  spec->set_max_attempts(1);
  if (!ParseKeyValues(a.All("param"), "param", spec->mutable_params())) {
    return 2;
  }
  auto ref = c.ResolveData(a.Get("input"));
  if (!ref.ok()) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--input: ", ref.status().message())));
  }
  spec->set_train_data(*ref);
  lathe::v1::SubmitJobResponse resp;
  {
    auto ctx = Ctx(120);
    auto s = FromGrpc(c.jobs().SubmitJob(ctx.get(), req, &resp));
    if (!s.ok()) return Fail(s);
  }
  const std::string id = resp.job().id();
  if (!json_output) std::cerr << "prediction job " << id << "\n";
  auto job = AwaitJob(c, id, timeout);
  if (!job.ok()) return Fail(job.status());
  if (job->state() != lathe::v1::SUCCEEDED) {
    return Fail(absl::AbortedError(absl::StrCat(
        "prediction job ", id, " ", lathe::v1::JobState_Name(job->state()),
        ": ", job->error())));
  }
  char tmpl[] = "/tmp/lathe-predict-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    return Fail(absl::InternalError("cannot create a temporary directory"));
  }
  const std::string dest = tmpl;
  auto cp = c.DownloadCheckpoint(id, "latest", dest, nullptr);
  std::error_code ec;
  if (!cp.ok()) {
    std::filesystem::remove_all(dest, ec);
    return Fail(cp.status());
  }
  std::ifstream in(dest + "/predictions.jsonl");
  std::string line;
  while (std::getline(in, line)) std::cout << line << "\n";
  std::filesystem::remove_all(dest, ec);
  return 0;
}

int Wait(Client& c, const std::string& id, double timeout_s) {
  const auto start = std::chrono::steady_clock::now();
  while (true) {
    auto job = GetJob(c, id);
    if (!job.ok() && job.status().code() != absl::StatusCode::kUnavailable) {
      return Fail(job.status());
    }
    if (job.ok() && IsFinal(job->state())) {
      if (json_output) {
        std::cout << ToJson(*job) << "\n";
      } else {
        std::cout << "job " << id << " "
                  << lathe::v1::JobState_Name(job->state());
        if (!job->error().empty()) std::cout << ": " << job->error();
        std::cout << "\n";
      }
      return job->state() == lathe::v1::SUCCEEDED ? 0 : 1;
    }
    if (timeout_s > 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
                .count() > timeout_s) {
      std::cerr << "lathe: timed out waiting for " << id << "\n";
      return 3;
    }
    // Block on the event stream rather than polling quickly.
    lathe::v1::WatchJobRequest req;
    req.set_id(id);
    req.set_after_seq(job.ok() ? job->last_event_seq() : 0);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(5));
    auto reader = c.jobs().WatchJob(&ctx, req);
    lathe::v1::WatchJobResponse r;
    while (reader->Read(&r)) {
      if (IsFinal(r.job().state())) break;
    }
    ctx.TryCancel();
    reader->Finish();
  }
}

int Checkpoints(Client& c, const std::string& id) {
  lathe::v1::ListCheckpointsRequest req;
  req.set_job_id(id);
  lathe::v1::ListCheckpointsResponse resp;
  auto ctx = Ctx();
  auto s = FromGrpc(c.jobs().ListCheckpoints(ctx.get(), req, &resp));
  if (!s.ok()) return Fail(s);
  if (json_output) {
    std::cout << ToJson(resp) << "\n";
    return 0;
  }
  for (const auto& cp : resp.checkpoints()) {
    std::cout << "step " << cp.step() << (cp.final() ? " (final)" : "")
              << (cp.step() == resp.best_step() ? " (best)" : "") << "  "
              << MetricsText(cp.metrics()) << "\n";
    for (const auto& f : cp.files()) {
      std::cout << absl::StrFormat("  %-28s %12d  %s\n", f.name(), f.size(),
                                   f.sha256());
    }
  }
  return 0;
}

int Download(Client& c, const Args& a, const std::string& id) {
  const std::string dest = a.Get("dest");
  if (dest.empty()) {
    std::cerr << "lathe: download needs --dest DIR\n";
    return 2;
  }
  auto cp = c.DownloadCheckpoint(id, a.Get("checkpoint", "latest"), dest,
                                 [](const lathe::v1::FileInfo& f) {
                                   if (!json_output) {
                                     std::cout << "  " << f.name() << "  "
                                               << f.size()
                                               << " bytes  sha256 ok\n";
                                   }
                                 });
  if (!cp.ok()) return Fail(cp.status());
  if (json_output) {
    std::cout << ToJson(*cp) << "\n";
  } else {
    std::cout << "downloaded checkpoint at step " << cp->step() << " to "
              << dest << " (" << cp->files_size() << " files verified)\n";
  }
  return 0;
}

std::string FormatBytes(int64_t n) {
  if (n >= (int64_t{1} << 30))
    return absl::StrFormat("%.1f GiB", n / 1073741824.0);
  if (n >= (1 << 20)) return absl::StrFormat("%.1f MiB", n / 1048576.0);
  if (n >= (1 << 10)) return absl::StrFormat("%.1f KiB", n / 1024.0);
  return absl::StrCat(n, " B");
}

int Models(Client& c, const Args& a) {
  const std::string sub = a.positional.size() > 1 ? a.positional[1] : "";
  if (sub == "push" && a.positional.size() == 3) {
    const std::string name = a.Get("name");
    if (name.empty()) {
      std::cerr << "lathe: models push needs --name NAME\n";
      return 2;
    }
    int last_percent = -1;
    auto resp = c.PushModel(
        a.positional[2], name, !a.Get("replace").empty(),
        [&](const std::string& path, int64_t sent, int64_t total) {
          const int percent =
              total > 0 ? static_cast<int>(sent * 100 / total) : 100;
          if (percent == last_percent) return;
          last_percent = percent;
          std::cerr << "\rpushing " << name << ": " << percent << "% ("
                    << FormatBytes(sent) << " of " << FormatBytes(total) << ") "
                    << path << "\x1b[K" << std::flush;
        });
    if (last_percent >= 0) std::cerr << "\n";
    if (!resp.ok()) return Fail(resp.status());
    if (json_output) {
      std::cout << ToJson(*resp) << "\n";
    } else {
      const auto& m = resp->model();
      std::cout << (resp->created() ? "stored " : "unchanged ") << m.name()
                << "  " << m.digest() << "  " << m.files_size() << " files  "
                << FormatBytes(m.size()) << "\n";
    }
    return 0;
  }
  if (sub == "list" && a.positional.size() == 2) {
    lathe::v1::ListModelsResponse resp;
    auto ctx = Ctx();
    auto s = FromGrpc(c.models().ListModels(
        ctx.get(), lathe::v1::ListModelsRequest(), &resp));
    if (!s.ok()) return Fail(s);
    if (json_output) {
      std::cout << ToJson(resp) << "\n";
      return 0;
    }
    std::cout << absl::StrFormat("%-24s %-16s %10s  %s\n", "NAME", "DIGEST",
                                 "SIZE", "CREATED");
    for (const auto& m : resp.models()) {
      const std::time_t t = static_cast<std::time_t>(m.create_time_ms() / 1000);
      char when[32] = {0};
      std::strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S",
                    std::localtime(&t));
      std::cout << absl::StrFormat("%-24s %-16s %10s  %s\n", m.name(),
                                   m.digest().substr(0, 16),
                                   FormatBytes(m.size()), when);
    }
    for (const auto& p : resp.presets()) {
      std::cout << absl::StrFormat("%-24s %-16s %10s  %s\n", p.name(),
                                   "(preset)", "-", p.description());
    }
    return 0;
  }
  if (sub == "delete" && a.positional.size() == 3) {
    lathe::v1::DeleteModelRequest req;
    req.set_name(a.positional[2]);
    lathe::v1::DeleteModelResponse resp;
    auto ctx = Ctx();
    auto s = FromGrpc(c.models().DeleteModel(ctx.get(), req, &resp));
    if (!s.ok()) return Fail(s);
    if (json_output) {
      std::cout << ToJson(resp) << "\n";
    } else {
      std::cout << "deleted " << resp.model().name() << "  "
                << resp.model().digest() << "\n";
    }
    return 0;
  }
  std::cerr << "lathe: usage: lathe models push DIR --name NAME [--replace] | "
               "models list | models delete NAME\n";
  return 2;
}

int Main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "tokenize") {
    return RunTokenizeCommand(argc - 2, argv + 2, std::cin, std::cout,
                              std::cerr);
  }
  auto parsed = ParseArgs(argc, argv);
  if (!parsed.ok()) return Fail(parsed.status());
  Args& a = *parsed;
  if (a.positional.empty() || !a.Get("help").empty()) {
    std::cout << kUsage;
    return a.positional.empty() && a.Get("help").empty() ? 2 : 0;
  }
  const std::string output = a.Get("output", "text");
  if (output != "text" && output != "json") {
    std::cerr << "lathe: --output must be text or json\n";
    return 2;
  }
  json_output = output == "json";
  std::string server = a.Get("server");
  if (server.empty() && std::getenv("LATHE_SERVER"))
    server = std::getenv("LATHE_SERVER");
  if (server.empty()) server = "127.0.0.1:50051";
  Client c(server);
  const std::string cmd = a.positional[0];
  auto need_job = [&]() -> std::string {
    return a.positional.size() > 1 ? a.positional[1] : "";
  };
  if (cmd == "submit") return Submit(c, a);
  if (cmd == "list") return List(c, a);
  if (cmd == "models") return Models(c, a);
  if (cmd == "predict") return Predict(c, a);
  if (cmd == "datasets") {
    if (a.positional.size() != 3 || a.positional[1] != "upload") {
      std::cerr << "lathe: usage: lathe datasets upload FILE [--name NAME]\n";
      return 2;
    }
    const std::string path = a.positional[2];
    auto ds =
        c.UploadDataset(path, a.Get("name", path.substr(path.rfind('/') + 1)));
    if (!ds.ok()) return Fail(ds.status());
    if (json_output) {
      std::cout << ToJson(*ds) << "\n";
    } else {
      std::cout << ds->ref() << "  " << ds->name() << "  " << ds->size()
                << " bytes\n";
    }
    return 0;
  }
  const std::string id = need_job();
  if (id.empty()) {
    std::cerr << "lathe: " << cmd << " needs a JOB id\n" << kUsage;
    return 2;
  }
  if (cmd == "get") {
    auto job = GetJob(c, id);
    if (!job.ok()) return Fail(job.status());
    if (json_output) {
      std::cout << ToJson(*job) << "\n";
    } else {
      PrintJobText(*job);
    }
    return 0;
  }
  if (cmd == "watch") {
    int64_t after = 0;
    if (!a.Get("after-seq").empty() &&
        !absl::SimpleAtoi(a.Get("after-seq"), &after)) {
      std::cerr << "lathe: --after-seq must be an integer\n";
      return 2;
    }
    return Watch(c, id, after);
  }
  if (cmd == "wait") {
    double timeout = 0;
    if (!a.Get("timeout").empty() &&
        !absl::SimpleAtod(a.Get("timeout"), &timeout)) {
      std::cerr << "lathe: --timeout must be a number of seconds\n";
      return 2;
    }
    return Wait(c, id, timeout);
  }
  if (cmd == "cancel") {
    lathe::v1::CancelJobRequest req;
    req.set_id(id);
    lathe::v1::CancelJobResponse resp;
    auto ctx = Ctx();
    auto s = FromGrpc(c.jobs().CancelJob(ctx.get(), req, &resp));
    if (!s.ok()) return Fail(s);
    if (json_output) {
      std::cout << ToJson(resp.job()) << "\n";
    } else {
      std::cout << "job " << id << " "
                << lathe::v1::JobState_Name(resp.job().state()) << "\n";
    }
    return 0;
  }
  if (cmd == "pause" || cmd == "resume" || cmd == "checkpoint-now") {
    lathe::v1::Job job;
    auto ctx = Ctx();
    absl::Status s;
    if (cmd == "pause") {
      lathe::v1::PauseJobRequest req;
      req.set_id(id);
      lathe::v1::PauseJobResponse resp;
      s = FromGrpc(c.jobs().PauseJob(ctx.get(), req, &resp));
      job = resp.job();
    } else if (cmd == "resume") {
      lathe::v1::ResumeJobRequest req;
      req.set_id(id);
      lathe::v1::ResumeJobResponse resp;
      s = FromGrpc(c.jobs().ResumeJob(ctx.get(), req, &resp));
      job = resp.job();
    } else {
      lathe::v1::RequestCheckpointRequest req;
      req.set_id(id);
      lathe::v1::RequestCheckpointResponse resp;
      s = FromGrpc(c.jobs().RequestCheckpoint(ctx.get(), req, &resp));
      job = resp.job();
    }
    if (!s.ok()) return Fail(s);
    if (json_output) {
      std::cout << ToJson(job) << "\n";
    } else {
      std::cout << "job " << id << " " << lathe::v1::JobState_Name(job.state())
                << (cmd == "checkpoint-now" ? " (checkpoint requested)" : "")
                << "\n";
    }
    return 0;
  }
  if (cmd == "checkpoints") return Checkpoints(c, id);
  if (cmd == "download") return Download(c, a, id);
  std::cerr << "lathe: unknown command " << cmd << "\n" << kUsage;
  return 2;
}

}  // namespace
}  // namespace lathe::client

int main(int argc, char** argv) { return lathe::client::Main(argc, argv); }

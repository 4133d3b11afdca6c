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

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/account_commands.h"
#include "client/cli_args.h"
#include "client/client.h"
#include "client/metrics_text.h"
#include "client/tls_flags.h"
#include "client/tokenize_command.h"
#include "common/channel.h"
#include "common/files.h"
#include "common/redact.h"
#include "common/status.h"

namespace lathe::client {
namespace {

constexpr char kUsage[] =
    R"(usage: lathe [--server HOST:PORT] [--token-file FILE] [--output text|json]
             COMMAND ...

Commands:
  submit --task TASK --model MODEL --train-data DATA [--validation-data DATA]
         [--param NAME=VALUE ...] [--device cpu|cuda:N] [--owner NAME]
         [--label KEY=VALUE ...] [--request-id ID] [--priority N]
         [--max-attempts N] [--devices N] [--min-device-memory-mb MB]
         [--webhook URL ...]
                             submit a job; DATA is a local file (uploaded),
                             a dataset:<sha256> reference, a file:// URI,
                             or an https:// or s3://BUCKET/KEY URI the
                             server fetches (add #sha256=HEX to check it);
                             MODEL is a stored model's name, a preset
                             (preset:bert-tiny, preset:bert-mini,
                             preset:gpt2-tiny, preset:llama-tiny,
                             preset:llama-mini, preset:vit-tiny,
                             preset:cnn-small), job:ID
                             (that job's best checkpoint), job:ID@STEP, or
                             an absolute directory path / file:// URI the
                             server may read, or an s3://BUCKET/PREFIX/ or
                             https://HOST/PATH/ model directory it fetches
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
  login                      check a token (--token-file, $LATHE_TOKEN or
                             standard input) and keep it for later commands
  whoami                     the user, team and role of the token in use
  users create NAME --team TEAM [--role admin|member|viewer|worker]
  users list | users disable NAME                          (admins)
  tokens create [--user NAME] [--name LABEL] [--expires 30d|12h|90m]
                             print a new token once (admins: for anyone)
  tokens list [--user NAME] | tokens revoke ID
  audit [--limit N] [--before-seq SEQ]
                             calls that changed something or were refused,
                             newest first (admins)
  tokenize --tokenizer DIR [--jsonl] [--no-special-tokens] < LINES
                             encode each line offline: one JSON object of
                             ids and code point offsets per line

The server is --server, else $LATHE_SERVER, else 127.0.0.1:50051.
The token is read from --token-file FILE, else $LATHE_TOKEN, else the file
`lathe login` wrote ($XDG_CONFIG_HOME/lathe/token or ~/.config/lathe/token).
A new server writes the first admin's token to DATA_DIR/admin.token.
TLS: --tls-ca FILE (else $LATHE_TLS_CA) verifies the server against FILE;
--tls-cert FILE --tls-key FILE (else $LATHE_TLS_CERT, $LATHE_TLS_KEY) present
a client certificate (mTLS).
--output json prints protobuf's JSON mapping with the proto field names.
Tasks (--task): text-classification, text-regression, token-classification,
question-answering, causal-lm, masked-lm, image-classification,
audio-classification, speech-recognition.
Hyperparameters (--param): see docs/params.md (or submit an unknown name: the
error lists them all).
)";

bool json_output = false;
// The server's address, for messages.
std::string server_target;

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

// "  1234 tokens/s" for text jobs; "" when the job reports no tokens.
std::string TokensPerSecond(const lathe::v1::TrainMetrics& t) {
  if (t.tokens_per_second() <= 0) return "";
  return absl::StrFormat("  %.0f tokens/s", t.tokens_per_second());
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

std::map<std::string, double> SortedMetrics(
    const google::protobuf::Map<std::string, double>& m) {
  return std::map<std::string, double>(m.begin(), m.end());
}

// The job's metric_for_best_model as submitted; empty for the task's
// default.
std::string BestMetricOf(const lathe::v1::Job& j) {
  auto it = j.spec().params().find("metric_for_best_model");
  return it == j.spec().params().end() ? "" : it->second;
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
        "progress:   step %d/%d  loss %.4f  lr %.3g  %.1f samples/s%s\n",
        t.step(), t.total_steps(), t.loss(), t.learning_rate(),
        t.samples_per_second(), TokensPerSecond(t));
  }
  if (!j.eval_metrics().empty()) {
    const auto metrics = SortedMetrics(j.eval_metrics());
    std::cout << "evaluation: "
              << HeadlineMetricsText(j.spec().task(), BestMetricOf(j), metrics)
              << "\n";
    for (const std::string& line : ConfusionMatrixLines(metrics, "    ")) {
      std::cout << line << "\n";
    }
  }
  if (!j.error().empty()) std::cout << "error:      " << j.error() << "\n";
}

int Fail(const absl::Status& s) {
  std::cerr << "lathe: " << absl::StatusCodeToString(s.code()) << ": ";
  // A call to a server that is down fails with gRPC's words; say which
  // server (CheckConnected's message already does).
  if (s.code() == absl::StatusCode::kUnavailable &&
      !absl::StartsWith(s.message(), "cannot reach the server")) {
    std::cerr << "server " << server_target << ": ";
  }
  std::cerr << s.message() << "\n";
  return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

// A usage mistake: the message, and exit code 2.
int UsageFail(const std::string& message) {
  std::cerr << "lathe: " << message << "\n";
  return 2;
}

// A --train-data, --validation-data or --input argument that names a local
// file must exist: checked before anything is sent, so that a typo does
// not cost an upload of the other file.
absl::Status CheckDataArg(const char* flag, const std::string& arg) {
  if (arg.empty() || IsServerDataRef(arg) || PathExists(arg)) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, ": \"", RedactSecrets(arg),
                   "\" is neither a local file, a dataset: reference nor a "
                   "file://, https:// or s3:// URI"));
}

// Uploads a local file (or passes a reference through); an upload's
// failure keeps its code (UNAVAILABLE stays UNAVAILABLE) and names the flag.
absl::StatusOr<std::string> ResolveDataArg(Client& c, const char* flag,
                                           const std::string& arg) {
  auto ref = c.ResolveData(arg);
  if (!ref.ok()) {
    return absl::Status(
        ref.status().code(),
        absl::StrCat("--", flag, " ", arg, ": ", ref.status().message()));
  }
  return ref;
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
    const std::string name = kv.substr(0, eq), value = kv.substr(eq + 1);
    auto it = out->find(name);
    if (it != out->end() && it->second != value) {
      std::cerr << "lathe: --" << flag << " " << name << " given twice (\""
                << it->second << "\", then \"" << value << "\")\n";
      return false;
    }
    (*out)[name] = value;
  }
  return true;
}

int Submit(Client& c, const ParsedArgs& a) {
  lathe::v1::SubmitJobRequest req;
  auto* spec = req.mutable_spec();
  spec->set_task(a.Get("task"));
  spec->set_model(a.Get("model"));
  spec->set_device(a.Get("device"));
  // Empty: the server makes the token's user the owner.
  spec->set_owner(a.Get("owner"));
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
  // Called on state changes and new best checkpoints (docs/webhooks.md).
  for (const auto& url : a.All("webhook")) spec->add_webhooks(url);
  // Everything local is checked before the first byte goes out; then the
  // server must answer before local files are uploaded (their references
  // go into the spec), so that a server that is down reads as UNAVAILABLE.
  const std::pair<const char*, void (lathe::v1::JobSpec::*)(const std::string&)>
      data_flags[] = {
          {"train-data", &lathe::v1::JobSpec::set_train_data},
          {"validation-data", &lathe::v1::JobSpec::set_validation_data}};
  for (const auto& [flag, setter] : data_flags) {
    if (auto s = CheckDataArg(flag, a.Get(flag)); !s.ok()) return Fail(s);
  }
  if (auto s = c.CheckConnected(10000); !s.ok()) return Fail(s);
  for (const auto& [flag, setter] : data_flags) {
    auto ref = ResolveDataArg(c, flag, a.Get(flag));
    if (!ref.ok()) return Fail(ref.status());
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

int List(Client& c, const ParsedArgs& a) {
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
    std::cout << absl::StrFormat(
        "%-17s %-11s %-20s %-12s %s\n", j.id(),
        lathe::v1::JobState_Name(j.state()), j.spec().task(), progress,
        HeadlineMetricsText(j.spec().task(), BestMetricOf(j),
                            SortedMetrics(j.eval_metrics()), 2));
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
      "[%s] %3.0f%% step %d/%d  loss %.4f  %.1f samples/s%s  ETA %s", bar,
      frac * 100, t.step(), t.total_steps(), t.loss(), t.samples_per_second(),
      TokensPerSecond(t), FormatDuration(t.eta_seconds()));
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
                    << HeadlineMetricsText(r.job().spec().task(),
                                           BestMetricOf(r.job()),
                                           SortedMetrics(e.eval()))
                    << std::endl;
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

int Predict(Client& c, const ParsedArgs& a) {
  const std::string model = a.positional[0];
  double timeout = 0;
  if (!a.Get("timeout").empty() &&
      !absl::SimpleAtod(a.Get("timeout"), &timeout)) {
    return UsageFail("--timeout must be a number of seconds");
  }
  if (auto s = CheckDataArg("input", a.Get("input")); !s.ok()) return Fail(s);
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
  lathe::v1::SubmitJobRequest req;
  auto* spec = req.mutable_spec();
  spec->set_kind(lathe::v1::JOB_KIND_PREDICT);
  spec->set_task(task);
  spec->set_model(model);
  spec->set_device(a.Get("device"));
  // Empty: the server makes the token's user the owner.
  spec->set_owner(a.Get("owner"));
  spec->set_max_attempts(1);
  if (!ParseKeyValues(a.All("param"), "param", spec->mutable_params())) {
    return 2;
  }
  if (auto s = c.CheckConnected(10000); !s.ok()) return Fail(s);
  auto ref = ResolveDataArg(c, "input", a.Get("input"));
  if (!ref.ok()) return Fail(ref.status());
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
  // The task picks the metrics worth showing; without it (a job we may
  // not read), every metric shows.
  std::string task;
  if (auto job = GetJob(c, id); job.ok()) task = job->spec().task();
  // One confusion matrix is enough: the best checkpoint's, else the last's.
  const int64_t table_step =
      resp.best_step() != 0 ? resp.best_step()
      : resp.checkpoints().empty()
          ? 0
          : resp.checkpoints(resp.checkpoints_size() - 1).step();
  for (const auto& cp : resp.checkpoints()) {
    const auto metrics = SortedMetrics(cp.metrics());
    std::cout << "step " << cp.step() << (cp.final() ? " (final)" : "")
              << (cp.step() == resp.best_step() ? " (best)" : "") << "  "
              << HeadlineMetricsText(task, cp.metric_for_best_model(), metrics)
              << "\n";
    if (cp.step() == table_step) {
      for (const std::string& line : ConfusionMatrixLines(metrics, "    ")) {
        std::cout << line << "\n";
      }
    }
    for (const auto& f : cp.files()) {
      std::cout << absl::StrFormat("  %-28s %12d  %s\n", f.name(), f.size(),
                                   f.sha256());
    }
  }
  return 0;
}

int Download(Client& c, const ParsedArgs& a, const std::string& id) {
  const std::string dest = a.Get("dest");
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
              << dest << " over " << c.download_transport() << " ("
              << cp->files_size() << " files verified)\n";
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

int ModelsPush(Client& c, const ParsedArgs& a) {
  const std::string name = a.Get("name");
  int last_percent = -1;
  auto resp = c.PushModel(
      a.positional[0], name, a.Has("replace"),
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

int ModelsList(Client& c) {
  lathe::v1::ListModelsResponse resp;
  auto ctx = Ctx();
  auto s = FromGrpc(
      c.models().ListModels(ctx.get(), lathe::v1::ListModelsRequest(), &resp));
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
    std::strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", std::localtime(&t));
    std::cout << absl::StrFormat("%-24s %-16s %10s  %s\n", m.name(),
                                 m.digest().substr(0, 16),
                                 FormatBytes(m.size()), when);
  }
  for (const auto& p : resp.presets()) {
    std::cout << absl::StrFormat("%-24s %-16s %10s  %s\n", p.name(), "(preset)",
                                 "-", p.description());
  }
  return 0;
}

int ModelsDelete(Client& c, const std::string& name) {
  lathe::v1::DeleteModelRequest req;
  req.set_name(name);
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

int DatasetsUpload(Client& c, const ParsedArgs& a) {
  const std::string path = a.positional[0];
  if (!PathExists(path)) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("\"", path, "\" is not a local file")));
  }
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

// pause, resume and checkpoint-now: one call that returns the job.
int JobAction(Client& c, const std::string& cmd, const std::string& id) {
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

int Cancel(Client& c, const std::string& id) {
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

int Main(int argc, char** argv) {
  KeepFreedMemoryForStreaming();
  if (argc < 2) {
    std::cout << kUsage;
    return 2;
  }
  auto parsed =
      ParseCommandLine(std::vector<std::string>(argv + 1, argv + argc));
  if (!parsed.ok()) return UsageFail(std::string(parsed.status().message()));
  const ParsedArgs& a = *parsed;
  if (a.command == nullptr || a.Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  const std::string cmd = a.command->name;
  if (cmd == "tokenize") {
    return RunTokenizeCommand(a.Get("tokenizer"), a.Has("jsonl"),
                              !a.Has("no-special-tokens"), std::cin, std::cout,
                              std::cerr);
  }
  const std::string output = a.Get("output", "text");
  if (output != "text" && output != "json") {
    return UsageFail("--output must be text or json");
  }
  json_output = output == "json";
  server_target = a.Get("server");
  if (server_target.empty() && std::getenv("LATHE_SERVER")) {
    server_target = std::getenv("LATHE_SERVER");
  }
  if (server_target.empty()) server_target = "127.0.0.1:50051";
  // `login` stores a new token: it never falls back to the stored one.
  auto token =
      ReadToken(a.Get("token-file"), cmd == "login" ? "" : LoginTokenFile());
  if (!token.ok()) return Fail(token.status());
  if (cmd == "login" && token->empty()) {
    std::cerr << "lathe: paste the token and press Enter:\n";
    std::string line;
    std::getline(std::cin, line);
    *token = std::string(absl::StripAsciiWhitespace(line));
    if (token->empty()) return UsageFail("login: no token given");
  }
  auto client = Client::Create(server_target,
                               ChannelOptions{*token, TlsFilesFromArgs(a)});
  if (!client.ok()) return Fail(client.status());
  Client& c = **client;
  if (IsAccountCommand(cmd)) {
    return RunAccountCommand(c, a, *token, AccountIo{json_output, Fail});
  }
  if (cmd == "submit") return Submit(c, a);
  if (cmd == "list") return List(c, a);
  if (cmd == "predict") return Predict(c, a);
  if (cmd == "datasets upload") return DatasetsUpload(c, a);
  if (cmd == "models push") return ModelsPush(c, a);
  if (cmd == "models list") return ModelsList(c);
  if (cmd == "models delete") return ModelsDelete(c, a.positional[0]);
  // The rest take one JOB (the parser checked it is there).
  const std::string& id = a.positional[0];
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
      return UsageFail("--after-seq must be an integer");
    }
    return Watch(c, id, after);
  }
  if (cmd == "wait") {
    double timeout = 0;
    if (!a.Get("timeout").empty() &&
        !absl::SimpleAtod(a.Get("timeout"), &timeout)) {
      return UsageFail("--timeout must be a number of seconds");
    }
    return Wait(c, id, timeout);
  }
  if (cmd == "cancel") return Cancel(c, id);
  if (cmd == "pause" || cmd == "resume" || cmd == "checkpoint-now") {
    return JobAction(c, cmd, id);
  }
  if (cmd == "checkpoints") return Checkpoints(c, id);
  if (cmd == "download") return Download(c, a, id);
  return UsageFail(absl::StrCat("command ", cmd, " is not implemented"));
}

}  // namespace
}  // namespace lathe::client

int main(int argc, char** argv) { return lathe::client::Main(argc, argv); }

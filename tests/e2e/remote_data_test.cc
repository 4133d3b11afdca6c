// Jobs whose data lives elsewhere, through the real server, worker and CLI:
// the training set in an S3-compatible store (s3rver, run with Node.js
// from the npm package ./run installs) reached with --s3-endpoint and the
// AWS_* credentials of the server's environment, the validation set on an
// HTTPS server with its own test CA (--uri-ca). The job trains on the
// fetched bytes; the secret key shows in neither the server's log nor the
// job's events; a wrong access key, a refused host and a wrong digest are
// refused at submit with the field named.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <openssl/sha.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "nlohmann/json.hpp"
#include "tests/support/system.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_certs.h"

namespace lathe::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kSecret[] = "remote-data-test-secret-key";

std::string Sha256Hex(const std::string& data) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), d);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(d), sizeof(d)));
}

std::string S3rverScript() {
  // tests run from the build tree; the npm cache is the source tree's.
  return std::string(LATHE_SOURCE_DIR) +
         "/.cache/npm-s3/node_modules/s3rver/bin/s3rver.js";
}

// s3rver on 127.0.0.1 with bucket "training"; its port from its log.
class S3Store {
 public:
  explicit S3Store(const std::string& dir)
      : log_(dir + "/s3rver.log"),
        process_(
            {"/usr/bin/env", "node", S3rverScript(), "-d", dir + "/s3", "-a",
             "127.0.0.1", "-p", "0", "--configure-bucket", "training"},
            log_) {
    WaitUntil(
        [&] {
          std::smatch m;
          const std::string text = ReadFile(log_).value_or("");
          static const std::regex re("listening on 127\\.0\\.0\\.1:(\\d+)");
          if (!std::regex_search(text, m, re)) return false;
          port_ = std::stoi(m[1]);
          return true;
        },
        std::chrono::seconds(30));
  }
  int port() const { return port_; }
  std::string log() const { return ReadFile(log_).value_or(""); }
  // Stores an object (s3rver takes unsigned writes).
  bool Put(const std::string& key, const std::string& body) {
    httplib::Client c("127.0.0.1", port_);
    auto res =
        c.Put(("/training/" + key).c_str(), body, "application/octet-stream");
    return res && res->status == 200;
  }

 private:
  std::string log_;
  BackgroundProcess process_;
  int port_ = 0;
};

// An HTTPS file server on 127.0.0.1 serving one path, and a directory's
// files under /model/ once Serve() names it.
class HttpsFile {
 public:
  HttpsFile(const CertSet& certs, std::string path, std::string body)
      : server_(certs.server_cert.c_str(), certs.server_key.c_str()) {
    server_.Get(path, [body](const httplib::Request&, httplib::Response& r) {
      r.set_content(body, "application/octet-stream");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // stop() before the loop has begun would leave it running for good.
    while (!server_.is_running()) std::this_thread::yield();
  }
  ~HttpsFile() {
    server_.stop();
    thread_.join();
  }
  int port() const { return port_; }
  bool Serve(const std::string& dir) {
    return server_.set_mount_point("/model", dir);
  }

 private:
  httplib::SSLServer server_;
  int port_ = 0;
  std::thread thread_;
};

std::string Rows(int n, int offset) {
  std::string rows;
  for (int i = 0; i < n; ++i) {
    const bool pos = (i + offset) % 2 == 0;
    rows += nlohmann::json{{"text", pos ? "a fine happy bright day"
                                        : "a grim sad dark day"},
                           {"label", pos ? "pos" : "neg"}}
                .dump() +
            "\n";
  }
  return rows;
}

class RemoteDataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    ASSERT_TRUE(MakeTestCerts(dir_.path() + "/certs", &certs_, &why)) << why;
    ASSERT_TRUE(MakeDirs(dir_.path() + "/data").ok());
    store_ = std::make_unique<S3Store>(dir_.path());
    ASSERT_GT(store_->port(), 0)
        << "s3rver did not start (is " << S3rverScript()
        << " installed? ./run setup installs it): " << store_->log();
  }

  // A server that fetches from loopback with `access_key`.
  std::unique_ptr<ServerProcess> Server(const std::string& name,
                                        const std::string& access_key) {
    setenv("AWS_ACCESS_KEY_ID", access_key.c_str(), 1);
    setenv("AWS_SECRET_ACCESS_KEY", kSecret, 1);
    setenv("AWS_REGION", "eu-west-1", 1);
    const std::string data = dir_.path() + "/" + name;
    EXPECT_TRUE(MakeDirs(data).ok());
    auto server = std::make_unique<ServerProcess>(
        data, 1,
        std::vector<std::string>{
            "--allow-uri-host", "127.0.0.1", "--s3-endpoint",
            absl::StrCat("http://127.0.0.1:", store_->port()), "--uri-ca",
            certs_.a.ca});
    std::string why;
    EXPECT_TRUE(server->Start(&why)) << why;
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    unsetenv("AWS_REGION");
    return server;
  }

  TempDir dir_;
  TestCerts certs_;
  std::unique_ptr<S3Store> store_;
};

TEST_F(RemoteDataTest, TrainsOnDataFromS3AndHttps) {
  const std::string train = Rows(64, 0);
  const std::string valid = Rows(16, 1);
  ASSERT_TRUE(store_->Put("sets/sentiment train.jsonl", train));
  HttpsFile https(certs_.a, "/valid.jsonl", valid);
  auto server = Server("data", "S3RVER");

  const std::string s3_uri =
      "s3://training/sets/sentiment train.jsonl#sha256=" + Sha256Hex(train);
  const std::string https_uri =
      absl::StrCat("https://127.0.0.1:", https.port(), "/valid.jsonl");
  CommandResult submit = server->Cli(
      {"submit", "--task", "text-classification", "--model", "preset:bert-tiny",
       "--train-data", s3_uri, "--validation-data", https_uri, "--param",
       "epochs=1", "--param", "batch_size=16", "--output", "json"});
  ASSERT_EQ(submit.exit_code, 0) << submit.err;
  auto job = nlohmann::json::parse(submit.out);
  const std::string id = job["id"];
  // The datasets are the fetched bytes, by digest.
  EXPECT_EQ(job["train_dataset"]["sha256"], Sha256Hex(train));
  EXPECT_EQ(job["train_dataset"]["name"], "sentiment train.jsonl");
  EXPECT_EQ(job["validation_dataset"]["sha256"], Sha256Hex(valid));
  CommandResult wait = server->Cli({"wait", id, "--timeout", "300"});
  ASSERT_EQ(wait.exit_code, 0) << wait.out << wait.err;
  CommandResult got = server->Cli({"get", id, "--output", "json"});
  ASSERT_EQ(got.exit_code, 0) << got.err;
  auto done = nlohmann::json::parse(got.out);
  EXPECT_EQ(done["state"], "SUCCEEDED");
  // 64 rows in batches of 16, one epoch: the fetched set, all of it.
  EXPECT_EQ(done["train_metrics"]["total_steps"], "4");

  // Chained fine-tuning from a model directory in the store: the job's
  // best checkpoint, downloaded and put under models/run1/ (its TensorBoard
  // log included, which the server leaves out), and the same directory
  // over HTTPS.
  const std::string ckpt = dir_.path() + "/ckpt";
  CommandResult download =
      server->Cli({"download", id, "--dest", ckpt, "--checkpoint", "best"});
  ASSERT_EQ(download.exit_code, 0) << download.err;
  int uploaded = 0;
  std::string model_dir;
  for (const auto& e : std::filesystem::recursive_directory_iterator(ckpt)) {
    if (!e.is_regular_file()) continue;
    std::string rel = e.path().string().substr(ckpt.size() + 1);
    if (rel.find('/') != std::string::npos &&
        rel.substr(rel.find('/') + 1) == "config.json") {
      model_dir = ckpt + "/" + rel.substr(0, rel.find('/'));
    }
  }
  if (model_dir.empty()) model_dir = ckpt;
  ASSERT_TRUE(std::filesystem::exists(model_dir + "/config.json")) << ckpt;
  for (const auto& e :
       std::filesystem::recursive_directory_iterator(model_dir)) {
    if (!e.is_regular_file()) continue;
    const std::string rel = e.path().string().substr(model_dir.size() + 1);
    ASSERT_TRUE(store_->Put("models/run1/" + rel,
                            ReadFile(e.path().string()).value_or("")));
    ++uploaded;
  }
  ASSERT_GE(uploaded, 3);
  ASSERT_TRUE(https.Serve(model_dir));
  std::set<std::string> digests;
  for (const std::string& model :
       {std::string("s3://training/models/run1/"),
        absl::StrCat("https://127.0.0.1:", https.port(), "/model/")}) {
    CommandResult next =
        server->Cli({"submit", "--task", "text-classification", "--model",
                     model, "--train-data", s3_uri, "--param", "epochs=1",
                     "--param", "batch_size=16", "--output", "json"});
    ASSERT_EQ(next.exit_code, 0) << model << ": " << next.err;
    auto chained = nlohmann::json::parse(next.out);
    digests.insert(chained["model_source"]["digest"].get<std::string>());
    EXPECT_EQ(chained["model_source"]["kind"], "MODEL_SOURCE_KIND_MANIFEST");
    EXPECT_EQ(chained["model_source"]["origin"], model);
    bool has_config = false, has_log = false;
    for (const auto& f : chained["model_source"]["files"]) {
      has_config |= f["path"] == "config.json";
      has_log |= absl::StartsWith(f["path"].get<std::string>(), "runs/");
    }
    EXPECT_TRUE(has_config);
    EXPECT_FALSE(has_log);
    CommandResult w = server->Cli(
        {"wait", chained["id"].get<std::string>(), "--timeout", "300"});
    EXPECT_EQ(w.exit_code, 0) << model << ": " << w.out << w.err;
  }
  // Both give the same model.
  EXPECT_EQ(digests.size(), 1u);

  // The secret key is nowhere the users or the operators read.
  CommandResult events = server->Cli({"watch", id});
  ASSERT_EQ(events.exit_code, 0) << events.err;
  const std::string log =
      ReadFile(server->data_dir() + "/logs/server.log").value_or("");
  EXPECT_THAT(log, HasSubstr("fetched s3://training/sets/sentiment"));
  EXPECT_THAT(log, Not(HasSubstr(kSecret)));
  EXPECT_THAT(events.out, Not(HasSubstr(kSecret)));
  EXPECT_THAT(got.out, Not(HasSubstr(kSecret)));
}

TEST_F(RemoteDataTest, RefusalsNameTheFieldAndTheCause) {
  const std::string train = Rows(8, 0);
  ASSERT_TRUE(store_->Put("train.jsonl", train));
  auto server = Server("data", "S3RVER");
  auto submit = [&](const std::string& data) {
    return server->Cli({"submit", "--task", "text-classification", "--model",
                        "preset:bert-tiny", "--train-data", data});
  };
  // A digest that is not the content's.
  CommandResult wrong =
      submit("s3://training/train.jsonl#sha256=" + std::string(64, 'a'));
  EXPECT_NE(wrong.exit_code, 0);
  EXPECT_THAT(wrong.err, HasSubstr("spec.train_data"));
  EXPECT_THAT(wrong.err, HasSubstr("does not match"));
  // A missing object: S3's own error code in the message.
  CommandResult missing = submit("s3://training/nothing.jsonl");
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_THAT(missing.err, HasSubstr("HTTP 404 (NoSuchKey)"));
  // A host the server was not told it may call.
  CommandResult host = submit("https://198.51.100.7/train.jsonl");
  EXPECT_NE(host.exit_code, 0);
  EXPECT_THAT(host.err, HasSubstr("198.51.100.7 is not allowed"));
  CommandResult meta = submit("https://169.254.169.254/latest/meta-data");
  EXPECT_NE(meta.exit_code, 0);
  EXPECT_THAT(meta.err, HasSubstr("169.254.169.254"));
  // A model URI names a directory.
  CommandResult file_model =
      server->Cli({"submit", "--task", "text-classification", "--model",
                   "s3://training/train.jsonl", "--train-data",
                   "s3://training/train.jsonl"});
  EXPECT_NE(file_model.exit_code, 0);
  EXPECT_THAT(file_model.err, HasSubstr("spec.model"));
  EXPECT_THAT(file_model.err, HasSubstr("ends in '/'"));
  CommandResult empty_model = server->Cli(
      {"submit", "--task", "text-classification", "--model",
       "s3://training/no-model/", "--train-data", "s3://training/train.jsonl"});
  EXPECT_NE(empty_model.exit_code, 0);
  EXPECT_THAT(empty_model.err, HasSubstr("is not a model directory"));
  // Plain http is refused by name.
  CommandResult plain = submit("http://127.0.0.1/train.jsonl");
  EXPECT_NE(plain.exit_code, 0);
  EXPECT_THAT(plain.err, HasSubstr("use https://"));
  CommandResult list = server->Cli({"list", "--output", "json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_THAT(list.out, Not(HasSubstr("job-")));
}

TEST_F(RemoteDataTest, AnUnknownAccessKeyIsTheStoresAnswer) {
  ASSERT_TRUE(store_->Put("train.jsonl", Rows(8, 0)));
  auto server = Server("data", "NOBODY");
  CommandResult r = server->Cli({"submit", "--task", "text-classification",
                                 "--model", "preset:bert-tiny", "--train-data",
                                 "s3://training/train.jsonl"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("spec.train_data"));
  EXPECT_THAT(r.err, HasSubstr("HTTP 403 (InvalidAccessKeyId)"));
  EXPECT_THAT(r.err, Not(HasSubstr(kSecret)));
}

}  // namespace
}  // namespace lathe::testing

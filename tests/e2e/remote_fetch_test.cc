// The server's fetcher of https:// datasets (server/fetch/remote_fetch.h)
// against a real HTTPS server on loopback with its own test CA: a whole
// fetch, a transfer cut part-way and resumed with a Range request, a 5xx
// retried, a wrong #sha256= refused, refused hosts and addresses named in
// the error, sizes bounded, redirects not followed. The fetcher's blobs go
// to a real artifact store in a temporary directory.
#include "server/fetch/remote_fetch.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <openssl/sha.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_certs.h"

namespace lathe::testing {
namespace {

using server::ArtifactStore;
using server::RemoteFetcher;
using server::RemoteFetchOptions;
using ::testing::HasSubstr;

std::string Sha256Hex(const std::string& data) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), d);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(d), sizeof(d)));
}

std::string Content(size_t n) {
  std::string s;
  s.reserve(n);
  uint32_t x = 12345;
  while (s.size() < n) {
    x = x * 1103515245u + 12345u;
    s.push_back(static_cast<char>('a' + (x >> 16) % 26));
  }
  return s;
}

// An HTTPS file server on 127.0.0.1 with the test CA's certificate:
//   /file.jsonl   the content, with Range support
//   /cut.jsonl    the same, but the first request is cut after 300 KB
//   /flaky.jsonl  503 to the first request
//   /moved.jsonl  a 302 to /file.jsonl
//   /missing      404
class Source {
 public:
  Source(const CertSet& certs, std::string content)
      : server_(certs.server_cert.c_str(), certs.server_key.c_str()),
        content_(std::move(content)) {
    auto serve = [this](const httplib::Request& req, httplib::Response& res,
                        bool cut) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ranges_.push_back(req.get_header_value("Range"));
      }
      const bool first = requests_.fetch_add(1) == 0;
      const size_t size = content_.size();
      res.set_content_provider(size, "application/octet-stream",
                               [this, cut, first](size_t offset, size_t length,
                                                  httplib::DataSink& sink) {
                                 size_t end = offset + length;
                                 if (cut && first)
                                   end = std::min(end, size_t{300000});
                                 size_t at = offset;
                                 while (at < end) {
                                   const size_t n =
                                       std::min<size_t>(16384, end - at);
                                   if (!sink.write(content_.data() + at, n))
                                     return false;
                                   at += n;
                                 }
                                 // Cut: stop before the declared length, as a
                                 // dropped connection does.
                                 return !(cut && first);
                               });
    };
    server_.Get("/file.jsonl",
                [serve](const httplib::Request& q, httplib::Response& r) {
                  serve(q, r, false);
                });
    server_.Get("/cut.jsonl",
                [serve](const httplib::Request& q, httplib::Response& r) {
                  serve(q, r, true);
                });
    server_.Get("/flaky.jsonl",
                [this, serve](const httplib::Request& q, httplib::Response& r) {
                  if (flaky_.fetch_add(1) == 0) {
                    r.status = 503;
                    r.set_content("busy", "text/plain");
                    return;
                  }
                  serve(q, r, false);
                });
    server_.Get("/moved.jsonl",
                [](const httplib::Request&, httplib::Response& r) {
                  r.set_redirect("/file.jsonl");
                });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // stop() before the loop has begun would leave it running for good.
    while (!server_.is_running()) std::this_thread::yield();
  }
  ~Source() {
    server_.stop();
    thread_.join();
  }
  std::string Url(const std::string& path) const {
    return absl::StrCat("https://127.0.0.1:", port_, path);
  }
  std::vector<std::string> ranges() {
    std::lock_guard<std::mutex> lock(mu_);
    return ranges_;
  }

 private:
  httplib::SSLServer server_;
  const std::string content_;
  int port_ = 0;
  std::thread thread_;
  std::atomic<int> requests_{0};
  std::atomic<int> flaky_{0};
  std::mutex mu_;
  std::vector<std::string> ranges_;
};

class RemoteFetchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    ASSERT_TRUE(MakeTestCerts(dir_.path() + "/certs", &certs_, &why)) << why;
    auto store = ArtifactStore::Open(dir_.path() + "/artifacts");
    ASSERT_TRUE(store.ok()) << store.status();
    artifacts_ = std::move(*store);
    source_ = std::make_unique<Source>(certs_.a, content_);
  }

  std::unique_ptr<RemoteFetcher> Fetcher(std::vector<std::string> hosts,
                                         const std::string& ca) {
    RemoteFetchOptions o;
    o.policy = UriPolicy(std::move(hosts));
    o.ca_file = ca;
    o.first_retry = absl::Milliseconds(20);
    o.log = [this](const std::string& line) { log_.push_back(line); };
    auto f = RemoteFetcher::Create(std::move(o));
    EXPECT_TRUE(f.ok()) << f.status();
    return f.ok() ? std::move(*f) : nullptr;
  }
  std::unique_ptr<RemoteFetcher> Trusting() {
    return Fetcher({"127.0.0.1"}, certs_.a.ca);
  }
  std::string Blob(const std::string& sha) {
    return ReadFile(artifacts_->PathFor(sha)).value_or("");
  }

  TempDir dir_;
  TestCerts certs_;
  std::unique_ptr<ArtifactStore> artifacts_;
  const std::string content_ = Content(1 << 20);
  std::unique_ptr<Source> source_;
  std::vector<std::string> log_;
};

TEST_F(RemoteFetchTest, FetchesIntoTheStoreWithItsDigest) {
  auto f = Trusting();
  auto got = f->Fetch("spec.train_data", source_->Url("/file.jsonl"),
                      artifacts_.get(), 4 << 20);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->sha256, Sha256Hex(content_));
  EXPECT_EQ(got->size, static_cast<int64_t>(content_.size()));
  EXPECT_EQ(got->name, "file.jsonl");
  EXPECT_EQ(Blob(got->sha256), content_);
}

TEST_F(RemoteFetchTest, ACutTransferResumesWithARangeRequest) {
  auto f = Trusting();
  auto got =
      f->Fetch("spec.train_data",
               source_->Url("/cut.jsonl") + "#sha256=" + Sha256Hex(content_),
               artifacts_.get(), 4 << 20);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(Blob(got->sha256), content_);
  // The second request asked for the rest from where the first stopped.
  auto ranges = source_->ranges();
  ASSERT_EQ(ranges.size(), 2u);
  EXPECT_EQ(ranges[0], "");
  EXPECT_EQ(ranges[1], "bytes=300000-");
  bool logged = false;
  for (const auto& l : log_) logged |= absl::StrContains(l, "from byte 300000");
  EXPECT_TRUE(logged);
}

TEST_F(RemoteFetchTest, AServerErrorIsRetried) {
  auto f = Trusting();
  auto got = f->Fetch("spec.train_data", source_->Url("/flaky.jsonl"),
                      artifacts_.get(), 4 << 20);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->sha256, Sha256Hex(content_));
}

TEST_F(RemoteFetchTest, AWrongChecksumIsRefusedAndNothingStored) {
  auto f = Trusting();
  const std::string wrong(64, '0');
  auto got = f->Fetch("spec.train_data",
                      source_->Url("/file.jsonl") + "#sha256=" + wrong,
                      artifacts_.get(), 4 << 20);
  ASSERT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(got.status().message(), HasSubstr("spec.train_data"));
  EXPECT_THAT(got.status().message(), HasSubstr("does not match"));
  EXPECT_FALSE(artifacts_->Has(Sha256Hex(content_), content_.size()));
  auto bad =
      f->Fetch("spec.train_data", source_->Url("/file.jsonl") + "#md5=abc",
               artifacts_.get(), 4 << 20);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RemoteFetchTest, HostsOutsideThePolicyAreRefusedByName) {
  // Nothing allowed at all.
  auto none = Fetcher({}, certs_.a.ca);
  auto got = none->Fetch("spec.train_data", source_->Url("/file.jsonl"),
                         artifacts_.get(), 4 << 20);
  ASSERT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(got.status().message(), HasSubstr("127.0.0.1"));
  EXPECT_THAT(got.status().message(), HasSubstr("spec.train_data"));
  // A name outside the policy is refused by its name.
  auto url = source_->Url("/file.jsonl");
  url.replace(url.find("127.0.0.1"), 9, "localhost");
  auto named = Fetcher({"*.example.com"}, certs_.a.ca)
                   ->Fetch("spec.train_data", url, artifacts_.get(), 4 << 20);
  ASSERT_EQ(named.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(named.status().message(), HasSubstr("localhost"));
  // The cloud metadata address, even written as a literal, is refused.
  auto meta = Trusting()->Fetch("spec.train_data",
                                "https://169.254.169.254/latest/meta-data",
                                artifacts_.get(), 4 << 20);
  ASSERT_EQ(meta.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(meta.status().message(), HasSubstr("169.254.169.254"));
}

TEST_F(RemoteFetchTest, AnUntrustedCertificateFails) {
  // The system's CAs do not know the test CA; another test CA neither.
  auto f = Fetcher({"127.0.0.1"}, certs_.b.ca);
  auto got = f->Fetch("spec.train_data", source_->Url("/file.jsonl"),
                      artifacts_.get(), 4 << 20);
  ASSERT_FALSE(got.ok());
  EXPECT_THAT(got.status().message(), HasSubstr("https://127.0.0.1:"));
}

TEST_F(RemoteFetchTest, SizesAreBounded) {
  auto f = Trusting();
  auto got = f->Fetch("spec.train_data", source_->Url("/file.jsonl"),
                      artifacts_.get(), 1000);
  ASSERT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(got.status().message(), HasSubstr("larger than 1000 bytes"));
}

TEST_F(RemoteFetchTest, ClientErrorsAndRedirectsAreNotRetried) {
  auto f = Trusting();
  auto missing = f->Fetch("spec.train_data", source_->Url("/missing"),
                          artifacts_.get(), 4 << 20);
  ASSERT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), HasSubstr("HTTP 404"));
  auto moved = f->Fetch("spec.train_data", source_->Url("/moved.jsonl"),
                        artifacts_.get(), 4 << 20);
  ASSERT_EQ(moved.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(moved.status().message(), HasSubstr("not followed"));
  EXPECT_EQ(source_->ranges().size(), 0u);
}

TEST_F(RemoteFetchTest, MalformedUrisAreNamed) {
  auto f = Trusting();
  for (const std::string uri :
       {"http://127.0.0.1/file.jsonl", "https://127.0.0.1/dir/",
        "s3://Bad_Bucket/key", "s3://bucket", "ftp://x/y"}) {
    auto got = f->Fetch("spec.train_data", uri, artifacts_.get(), 4 << 20);
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << uri;
    EXPECT_THAT(got.status().message(), HasSubstr("spec.train_data")) << uri;
  }
}

}  // namespace
}  // namespace lathe::testing

#include "server/fetch/remote_fetch.h"

#include <curl/curl.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <set>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "server/core/checkpoints.h"
#include "server/core/job_states.h"
#include "server/core/models.h"

namespace lathe::server {

namespace {

// What a URI names, ready to request.
struct Source {
  HttpUrl url;           // what is requested (and checked by the policy)
  std::string display;   // scheme://host[:port]/path, for messages
  std::string name;      // the last path segment
  std::string expected;  // from #sha256=, or empty
  bool s3 = false;
  std::string s3_path;   // canonical path to sign
  std::string s3_query;  // canonical query to sign (a listing's)
};

bool IsHex64(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return absl::ascii_isdigit(c) || (c >= 'a' && c <= 'f');
         });
}

bool ValidBucket(const std::string& b) {
  if (b.size() < 3 || b.size() > 63) return false;
  return std::all_of(b.begin(), b.end(), [](char c) {
    return absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-' ||
           c == '.';
  });
}

std::string HostHeader(const HttpUrl& url) {
  const bool v6 = url.host.find(':') != std::string::npos;
  const bool default_port = (url.scheme == "http" && url.port == 80) ||
                            (url.scheme == "https" && url.port == 443);
  return absl::StrCat(v6 ? "[" : "", url.host, v6 ? "]" : "",
                      default_port ? "" : absl::StrCat(":", url.port));
}

// Transient answers: worth another attempt.
bool RetryableStatus(long status) {
  return status == 408 || status == 429 || status >= 500;
}

bool RetryableCurl(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return true;
    default:
      return false;
  }
}

// Where a transfer's bytes go: a blob, or a string (a listing).
class Sink {
 public:
  virtual ~Sink() = default;
  // RESOURCE_EXHAUSTED past the sink's limit.
  virtual absl::Status Append(std::string_view data) = 0;
  // Drops what was appended (the source sent the whole object again).
  virtual absl::Status Restart() = 0;
};

class BlobSink : public Sink {
 public:
  BlobSink(ArtifactStore* artifacts, int64_t max_bytes)
      : artifacts_(artifacts), max_bytes_(max_bytes) {}
  absl::Status Open() {
    ASSIGN_OR_RETURN(writer_, artifacts_->NewWriter(max_bytes_));
    return absl::OkStatus();
  }
  absl::Status Append(std::string_view data) override {
    return writer_->Append(data);
  }
  absl::Status Restart() override { return Open(); }
  BlobWriter* writer() { return writer_.get(); }

 private:
  ArtifactStore* const artifacts_;
  const int64_t max_bytes_;
  std::unique_ptr<BlobWriter> writer_;
};

class StringSink : public Sink {
 public:
  explicit StringSink(int64_t max_bytes) : max_bytes_(max_bytes) {}
  absl::Status Append(std::string_view data) override {
    if (static_cast<int64_t>(data_.size() + data.size()) > max_bytes_) {
      return absl::ResourceExhaustedError("too large");
    }
    data_.append(data);
    return absl::OkStatus();
  }
  absl::Status Restart() override {
    data_.clear();
    return absl::OkStatus();
  }
  const std::string& data() const { return data_; }

 private:
  const int64_t max_bytes_;
  std::string data_;
};

// One attempt's state, shared with curl's callbacks.
struct Transfer {
  Sink* sink = nullptr;
  int64_t* offset = nullptr;  // bytes in the sink
  CURL* curl = nullptr;
  long status = 0;
  bool started = false;  // the body's first bytes were seen
  int64_t range_start = -1;
  std::string error_body;
  absl::Status failure;  // why a callback stopped the transfer
};

size_t OnHeader(char* data, size_t size, size_t n, void* arg) {
  auto* t = static_cast<Transfer*>(arg);
  const absl::string_view line(data, size * n);
  // "Content-Range: bytes START-END/TOTAL"
  if (absl::StartsWithIgnoreCase(line, "content-range:")) {
    absl::string_view v =
        absl::StripAsciiWhitespace(line.substr(strlen("content-range:")));
    if (absl::ConsumePrefix(&v, "bytes ")) {
      int64_t start = -1;
      if (absl::SimpleAtoi(v.substr(0, v.find('-')), &start)) {
        t->range_start = start;
      }
    }
  }
  return size * n;
}

size_t OnBody(char* data, size_t size, size_t n, void* arg) {
  auto* t = static_cast<Transfer*>(arg);
  const size_t len = size * n;
  if (!t->started) {
    t->started = true;
    curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &t->status);
    if (t->status == 200 && *t->offset > 0) {
      // The whole object again: start over.
      if (absl::Status s = t->sink->Restart(); !s.ok()) {
        t->failure = s;
        return 0;
      }
      *t->offset = 0;
    } else if (t->status == 206 && t->range_start != *t->offset) {
      t->failure = absl::DataLossError(
          absl::StrCat("asked for bytes from ", *t->offset,
                       " and was sent a range from ", t->range_start));
      return 0;
    }
  }
  if (t->status != 200 && t->status != 206) {
    // An error document: keep its start for the message.
    if (t->error_body.size() < 4096) {
      t->error_body.append(data, std::min<size_t>(len, 4096));
    }
    return len;
  }
  if (absl::Status s = t->sink->Append(std::string_view(data, len)); !s.ok()) {
    t->failure = s;
    return 0;
  }
  *t->offset += static_cast<int64_t>(len);
  return len;
}

// "<Code>NoSuchKey</Code>" from an S3 error document.
std::string S3ErrorCode(const std::string& body) {
  const size_t a = body.find("<Code>");
  const size_t b = body.find("</Code>");
  if (a == std::string::npos || b == std::string::npos || b < a) return "";
  std::string code = body.substr(a + 6, b - a - 6);
  if (code.size() > 64) return "";
  return code;
}

struct CurlList {
  curl_slist* list = nullptr;
  ~CurlList() { curl_slist_free_all(list); }
  void Add(const std::string& s) { list = curl_slist_append(list, s.c_str()); }
};

// The URL of an S3 request for `bucket` at `canonical_path` ("/KEY" or
// "/"), path style on an endpoint, virtual-hosted style on AWS.
absl::Status S3Url(const RemoteFetchOptions& options, const HttpUrl& endpoint,
                   const std::string& field, const std::string& bucket,
                   const std::string& canonical_path, const std::string& query,
                   Source* src) {
  src->s3 = true;
  src->s3_query = query;
  std::string url;
  if (!endpoint.host.empty()) {
    src->s3_path = absl::StrCat("/", bucket, canonical_path);
    url = absl::StrCat(endpoint.scheme, "://", HostHeader(endpoint),
                       src->s3_path);
  } else {
    src->s3_path = canonical_path;
    url = absl::StrCat("https://", bucket, ".s3.", options.s3_region,
                       ".amazonaws.com", src->s3_path);
  }
  if (!query.empty()) absl::StrAppend(&url, "?", query);
  ASSIGN_OR_RETURN(src->url, ParseHttpUrl(url, field));
  return absl::OkStatus();
}

// s3://BUCKET/REST split; INVALID_ARGUMENT naming `field` for a bad bucket.
absl::Status SplitS3(const std::string& field, const std::string& uri,
                     std::string* bucket, std::string* rest) {
  const std::string bk = uri.substr(5);
  const size_t slash = bk.find('/');
  *bucket = bk.substr(0, slash);
  *rest = slash == std::string::npos ? "" : bk.substr(slash + 1);
  if (!ValidBucket(*bucket)) {
    return Invalid(field, absl::StrCat("\"", *bucket,
                                       "\" is not an S3 bucket name "
                                       "(3-63 of a-z, 0-9, '.', '-')"));
  }
  if (rest->size() > 1024 || rest->find('?') != std::string::npos) {
    return Invalid(field, "an S3 key has at most 1024 bytes and no '?'");
  }
  return absl::OkStatus();
}

// Keys and the continuation from a ListObjectsV2 answer.
std::string XmlUnescape(std::string s) {
  static const std::pair<const char*, const char*> kEntities[] = {
      {"&lt;", "<"},
      {"&gt;", ">"},
      {"&quot;", "\""},
      {"&apos;", "'"},
      {"&amp;", "&"}};
  for (const auto& [from, to] : kEntities) {
    std::string out;
    size_t at = 0;
    for (size_t i; (i = s.find(from, at)) != std::string::npos;) {
      out.append(s, at, i - at).append(to);
      at = i + strlen(from);
    }
    s = out.append(s, at, std::string::npos);
  }
  return s;
}

std::vector<std::string> XmlValues(const std::string& xml,
                                   const std::string& tag) {
  std::vector<std::string> out;
  const std::string open = "<" + tag + ">", close = "</" + tag + ">";
  for (size_t at = 0;;) {
    const size_t a = xml.find(open, at);
    if (a == std::string::npos) break;
    const size_t b = xml.find(close, a);
    if (b == std::string::npos) break;
    out.push_back(
        XmlUnescape(xml.substr(a + open.size(), b - a - open.size())));
    at = b + close.size();
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RemoteFetcher>> RemoteFetcher::Create(
    RemoteFetchOptions options) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  HttpUrl endpoint;
  if (!options.s3_endpoint.empty()) {
    ASSIGN_OR_RETURN(endpoint,
                     ParseHttpUrl(options.s3_endpoint, "--s3-endpoint"));
    if (endpoint.target != "/") {
      return absl::InvalidArgumentError(
          "--s3-endpoint: give the store's scheme, host and port only "
          "(http(s)://HOST[:PORT]); buckets are named in s3:// URIs");
    }
  }
  return std::unique_ptr<RemoteFetcher>(
      new RemoteFetcher(std::move(options), std::move(endpoint)));
}

AwsCredentials RemoteFetcher::CredentialsFromEnvironment() {
  auto env = [](const char* name) {
    const char* v = std::getenv(name);
    return std::string(v == nullptr ? "" : v);
  };
  AwsCredentials c;
  c.access_key_id = env("AWS_ACCESS_KEY_ID");
  c.secret_access_key = env("AWS_SECRET_ACCESS_KEY");
  c.session_token = env("AWS_SESSION_TOKEN");
  return c;
}

std::string RemoteFetcher::RegionFromEnvironment() {
  for (const char* name : {"AWS_REGION", "AWS_DEFAULT_REGION"}) {
    const char* v = std::getenv(name);
    if (v != nullptr && *v != '\0') return v;
  }
  return "us-east-1";
}

namespace {

using Log = std::function<void(const std::string&)>;

// Parses an https:// or s3:// URI (with an optional #sha256=) into `src`.
absl::Status ParseSource(const RemoteFetchOptions& options,
                         const HttpUrl& endpoint, const std::string& field,
                         const std::string& uri, Source* src) {
  std::string rest = uri;
  if (const size_t hash = uri.find('#'); hash != std::string::npos) {
    rest = uri.substr(0, hash);
    const std::string fragment = uri.substr(hash + 1);
    if (!absl::StartsWith(fragment, "sha256=") ||
        !IsHex64(fragment.substr(7))) {
      return Invalid(field,
                     "a URI's fragment may only be #sha256=<64 lower-case hex "
                     "digits>, the content's digest");
    }
    src->expected = fragment.substr(7);
  }
  if (absl::StartsWith(rest, "http://")) {
    return Invalid(field, "plain http:// is not fetched; use https://");
  }
  if (absl::StartsWith(rest, "https://")) {
    ASSIGN_OR_RETURN(src->url, ParseHttpUrl(rest, field));
    const std::string path =
        src->url.target.substr(0, src->url.target.find('?'));
    src->name = path.substr(path.rfind('/') + 1);
  } else if (absl::StartsWith(rest, "s3://")) {
    std::string bucket, key;
    RETURN_IF_ERROR(SplitS3(field, rest, &bucket, &key));
    if (key.empty()) {
      return Invalid(field, "an s3:// URI names an object: s3://BUCKET/KEY");
    }
    src->name = key.substr(key.rfind('/') + 1);
    RETURN_IF_ERROR(S3Url(options, endpoint, field, bucket,
                          "/" + S3UriEncode(key, /*keep_slash=*/true), "",
                          src));
  } else {
    return Invalid(field, "is not an https:// or s3:// URI");
  }
  if (src->name.empty()) {
    return Invalid(field, "the URI names no file (its path ends in '/')");
  }
  src->display = src->s3 ? rest : src->url.Display();
  return absl::OkStatus();
}

// Streams `src` into `sink` with the policy, signing, retries and resume
// described in the header. NOT_FOUND for a 404 (the caller decides whether
// a missing file is an error); INVALID_ARGUMENT naming `field` for other
// permanent failures; UNAVAILABLE after the last attempt. Returns the
// bytes received.
absl::StatusOr<int64_t> Download(const RemoteFetchOptions& options,
                                 const std::string& field, const Source& src,
                                 int64_t max_bytes, Sink* sink) {
  auto log = [&](const std::string& line) {
    if (options.log) options.log(line);
  };
  int64_t offset = 0;
  absl::Status last;
  for (int attempt = 1; attempt <= options.max_attempts; ++attempt) {
    if (attempt > 1) {
      const absl::Duration wait =
          std::min(options.first_retry * (1 << std::min(attempt - 2, 6)),
                   absl::Seconds(30));
      log(absl::StrCat("retrying ", src.display, " from byte ", offset, " in ",
                       absl::FormatDuration(wait), " (", last.message(), ")"));
      absl::SleepFor(wait);
    }
    // The policy again on each attempt, and the connection to the address
    // it checked: a name that re-resolves elsewhere cannot slip through.
    if (absl::Status s = options.policy.Check(src.url, field); !s.ok()) {
      return absl::InvalidArgumentError(s.message());
    }
    auto ip = options.policy.Resolve(src.url, field);
    if (!ip.ok()) {
      if (absl::IsUnavailable(ip.status())) {
        last = ip.status();
        continue;
      }
      return absl::InvalidArgumentError(ip.status().message());
    }
    CURL* curl = curl_easy_init();
    if (curl == nullptr) return absl::InternalError("curl_easy_init failed");
    std::unique_ptr<CURL, void (*)(CURL*)> owner(curl, curl_easy_cleanup);
    const bool v6 = ip->find(':') != std::string::npos;
    CurlList resolve;
    resolve.Add(absl::StrCat(src.url.host, ":", src.url.port, ":",
                             v6 ? "[" : "", *ip, v6 ? "]" : ""));
    CurlList headers;
    if (offset > 0) headers.Add(absl::StrCat("Range: bytes=", offset, "-"));
    if (src.s3 && !options.credentials.empty()) {
      SigV4Request req;
      req.canonical_path = src.s3_path;
      req.canonical_query = src.s3_query;
      req.payload_sha256 = kEmptyPayloadSha256;
      req.headers["host"] = HostHeader(src.url);
      req.headers["x-amz-date"] = AmzDate(absl::ToUnixSeconds(absl::Now()));
      req.headers["x-amz-content-sha256"] = kEmptyPayloadSha256;
      if (offset > 0) {
        req.headers["range"] = absl::StrCat("bytes=", offset, "-");
      }
      if (!options.credentials.session_token.empty()) {
        req.headers["x-amz-security-token"] = options.credentials.session_token;
      }
      for (const auto& [name, value] : req.headers) {
        if (name == "host" || name == "range") continue;
        headers.Add(absl::StrCat(name, ": ", value));
      }
      headers.Add(absl::StrCat("Authorization: ",
                               SigV4Authorization(req, options.credentials,
                                                  options.s3_region, "s3")));
    }
    Transfer t;
    t.sink = sink;
    t.offset = &offset;
    t.curl = curl;
    const std::string request_url = absl::StrCat(
        src.url.scheme, "://", HostHeader(src.url), src.url.target);
    curl_easy_setopt(curl, CURLOPT_URL, request_url.c_str());
    curl_easy_setopt(curl, CURLOPT_RESOLVE, resolve.list);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers.list);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "lathe-server");
    curl_easy_setopt(
        curl, CURLOPT_CONNECTTIMEOUT_MS,
        static_cast<long>(absl::ToInt64Milliseconds(options.connect_timeout)));
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME,
                     static_cast<long>(std::max<int64_t>(
                         1, absl::ToInt64Seconds(options.stall_timeout))));
    curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE,
                     static_cast<curl_off_t>(max_bytes - offset));
    if (!options.ca_file.empty()) {
      curl_easy_setopt(curl, CURLOPT_CAINFO, options.ca_file.c_str());
    }
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, OnHeader);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnBody);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &t);
    const CURLcode code = curl_easy_perform(curl);
    if (t.status == 0) {
      curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &t.status);
    }

    const std::string too_large =
        absl::StrCat(src.display, " is larger than ", max_bytes, " bytes");
    if (!t.failure.ok()) {
      if (absl::IsResourceExhausted(t.failure)) {
        return Invalid(field, too_large);
      }
      last = t.failure;
      continue;
    }
    if (code == CURLE_FILESIZE_EXCEEDED) return Invalid(field, too_large);
    if (code == CURLE_OK && (t.status == 200 || t.status == 206)) {
      return offset;
    }
    if (code != CURLE_OK) {
      last = absl::UnavailableError(
          absl::StrCat(src.display, ": ", curl_easy_strerror(code)));
      if (!RetryableCurl(code)) {
        return Invalid(field, std::string(last.message()));
      }
      continue;
    }
    // An HTTP error answer.
    std::string what = absl::StrCat(src.display, " answered HTTP ", t.status);
    if (src.s3) {
      const std::string s3code = S3ErrorCode(t.error_body);
      if (!s3code.empty()) absl::StrAppend(&what, " (", s3code, ")");
    }
    if (t.status == 301 || t.status == 302 || t.status == 303 ||
        t.status == 307 || t.status == 308) {
      absl::StrAppend(&what, "; redirects are not followed");
    }
    if (t.status == 404)
      return absl::NotFoundError(absl::StrCat(field, ": ", what));
    last = absl::UnavailableError(what);
    if (!RetryableStatus(t.status)) return Invalid(field, what);
  }
  return absl::UnavailableError(
      absl::StrCat(field, ": could not fetch ", src.display, " after ",
                   options.max_attempts, " attempts: ", last.message()));
}

// Fetches `src` into a new blob, checking its #sha256= when it has one.
absl::StatusOr<RemoteData::Fetched> FetchBlob(const RemoteFetchOptions& options,
                                              const std::string& field,
                                              const Source& src,
                                              ArtifactStore* artifacts,
                                              int64_t max_bytes) {
  BlobSink sink(artifacts, max_bytes);
  RETURN_IF_ERROR(sink.Open());
  if (options.log) {
    options.log(absl::StrCat("fetching ", src.display, " for ", field));
  }
  ASSIGN_OR_RETURN(int64_t size,
                   Download(options, field, src, max_bytes, &sink));
  auto sha = sink.writer()->Commit(src.expected);
  if (!sha.ok()) {
    if (absl::IsDataLoss(sha.status())) {
      return Invalid(field, absl::StrCat("the content of ", src.display,
                                         " does not match its #sha256="));
    }
    return sha.status();
  }
  if (options.log) {
    options.log(absl::StrCat("fetched ", src.display, ": ", size,
                             " bytes, sha256 ", *sha));
  }
  return RemoteData::Fetched{*sha, size, src.name};
}

// Files of a Hugging Face model directory, tried in turn on an https://
// base that cannot be listed; config.json must exist.
constexpr const char* kModelFiles[] = {"config.json",
                                       "model.safetensors",
                                       "model.safetensors.index.json",
                                       "tokenizer.json",
                                       "tokenizer_config.json",
                                       "special_tokens_map.json",
                                       "added_tokens.json",
                                       "vocab.txt",
                                       "vocab.json",
                                       "merges.txt",
                                       "tokenizer.model",
                                       "generation_config.json",
                                       "preprocessor_config.json",
                                       "adapter_config.json",
                                       "adapter_model.safetensors"};

}  // namespace

absl::StatusOr<RemoteData::Fetched> RemoteFetcher::Fetch(
    const std::string& field, const std::string& uri, ArtifactStore* artifacts,
    int64_t max_bytes) {
  Source src;
  RETURN_IF_ERROR(ParseSource(options_, endpoint_, field, uri, &src));
  auto got = FetchBlob(options_, field, src, artifacts, max_bytes);
  if (absl::IsNotFound(got.status())) {
    return absl::InvalidArgumentError(got.status().message());
  }
  return got;
}

absl::StatusOr<std::vector<RemoteData::ModelFileBlob>>
RemoteFetcher::FetchModel(const std::string& field, const std::string& uri,
                          ArtifactStore* artifacts, int64_t max_bytes,
                          int max_files) {
  if (!absl::EndsWith(uri, "/")) {
    return Invalid(field,
                   "a model URI names a directory and ends in '/' "
                   "(s3://BUCKET/PREFIX/ or https://HOST/PATH/)");
  }
  if (absl::StartsWith(uri, "http://")) {
    return Invalid(field, "plain http:// is not fetched; use https://");
  }
  // Relative paths to fetch, each with its Source.
  std::vector<std::pair<std::string, Source>> wanted;
  bool listed = false;
  if (absl::StartsWith(uri, "s3://")) {
    std::string bucket, prefix;
    RETURN_IF_ERROR(SplitS3(field, uri, &bucket, &prefix));
    std::string token;
    do {
      std::string query;
      if (!token.empty()) {
        query =
            absl::StrCat("continuation-token=", S3UriEncode(token, false), "&");
      }
      absl::StrAppend(&query,
                      "list-type=2&prefix=", S3UriEncode(prefix, false));
      Source list;
      RETURN_IF_ERROR(
          S3Url(options_, endpoint_, field, bucket, "/", query, &list));
      list.display = absl::StrCat("s3://", bucket, "/", prefix);
      StringSink xml(4 << 20);
      auto got = Download(options_, field, list, 4 << 20, &xml);
      if (absl::IsNotFound(got.status())) {
        return absl::InvalidArgumentError(got.status().message());
      }
      RETURN_IF_ERROR(got.status());
      for (const std::string& key : XmlValues(xml.data(), "Key")) {
        if (!absl::StartsWith(key, prefix) || absl::EndsWith(key, "/")) {
          continue;
        }
        const std::string rel = key.substr(prefix.size());
        // Pickles are never stored or loaded; TensorBoard logs and a
        // checkpoint's training state are no part of a model.
        if (IsPickleFile(rel) || absl::StartsWith(rel, "runs/") ||
            IsTrainingStateFile(rel)) {
          if (options_.log) {
            options_.log(absl::StrCat("not fetching s3://", bucket, "/", key,
                                      " (not part of a model Lathe loads)"));
          }
          continue;
        }
        RETURN_IF_ERROR(CheckModelPath(rel, field));
        Source src;
        RETURN_IF_ERROR(S3Url(options_, endpoint_, field, bucket,
                              "/" + S3UriEncode(key, true), "", &src));
        src.display = absl::StrCat("s3://", bucket, "/", key);
        src.name = key.substr(key.rfind('/') + 1);
        wanted.emplace_back(key.substr(prefix.size()), src);
        if (static_cast<int>(wanted.size()) > max_files) {
          return Invalid(field, absl::StrCat(uri, " holds more than ",
                                             max_files, " files"));
        }
      }
      auto truncated = XmlValues(xml.data(), "IsTruncated");
      auto next = XmlValues(xml.data(), "NextContinuationToken");
      token = !truncated.empty() && truncated[0] == "true" && !next.empty()
                  ? next[0]
                  : "";
    } while (!token.empty());
    listed = true;
  } else if (absl::StartsWith(uri, "https://")) {
    for (const char* name : kModelFiles) {
      Source src;
      RETURN_IF_ERROR(
          ParseSource(options_, endpoint_, field, uri + name, &src));
      wanted.emplace_back(name, src);
    }
  } else {
    return Invalid(field, "is not an https:// or s3:// URI");
  }

  std::vector<ModelFileBlob> files;
  int64_t total = 0;
  std::set<std::string> have;
  auto fetch_one = [&](const std::string& path, const Source& src,
                       bool required) -> absl::Status {
    auto got = FetchBlob(options_, field, src, artifacts, max_bytes - total);
    if (absl::IsNotFound(got.status()) && !required) return absl::OkStatus();
    if (absl::IsNotFound(got.status())) {
      return absl::InvalidArgumentError(got.status().message());
    }
    RETURN_IF_ERROR(got.status());
    total += got->size;
    files.push_back(ModelFileBlob{path, got->sha256, got->size});
    have.insert(path);
    return absl::OkStatus();
  };
  for (const auto& [path, src] : wanted) {
    RETURN_IF_ERROR(fetch_one(path, src, listed || path == "config.json"));
  }
  // Shards named by an index: on a base that cannot be listed, fetch them
  // too.
  if (!listed && have.count("model.safetensors.index.json")) {
    const ModelFileBlob& index =
        *std::find_if(files.begin(), files.end(), [](const ModelFileBlob& f) {
          return f.path == "model.safetensors.index.json";
        });
    auto text = ReadFile(artifacts->PathFor(index.sha256));
    RETURN_IF_ERROR(text.status());
    auto json = nlohmann::json::parse(*text, nullptr, false);
    std::set<std::string> shards;
    if (json.is_object() && json.contains("weight_map") &&
        json["weight_map"].is_object()) {
      for (const auto& [tensor, shard] : json["weight_map"].items()) {
        if (shard.is_string()) shards.insert(shard.get<std::string>());
      }
    }
    if (static_cast<int>(shards.size()) > max_files) {
      return Invalid(field, "the index names too many shards");
    }
    for (const std::string& shard : shards) {
      if (have.count(shard)) continue;
      Source src;
      RETURN_IF_ERROR(
          ParseSource(options_, endpoint_, field, uri + shard, &src));
      RETURN_IF_ERROR(fetch_one(shard, src, /*required=*/true));
    }
  }
  return files;
}

}  // namespace lathe::server

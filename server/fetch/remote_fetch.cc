#include "server/fetch/remote_fetch.h"

#include <curl/curl.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "server/core/job_states.h"

namespace lathe::server {

namespace {

// What a URI names, ready to request.
struct Source {
  HttpUrl url;           // what is requested (and checked by the policy)
  std::string display;   // scheme://host[:port]/path, for messages
  std::string name;      // the last path segment
  std::string expected;  // from #sha256=, or empty
  bool s3 = false;
  std::string s3_path;  // canonical path to sign
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

// One attempt's state, shared with curl's callbacks.
struct Transfer {
  ArtifactStore* artifacts = nullptr;
  int64_t max_bytes = 0;
  std::unique_ptr<BlobWriter>* writer = nullptr;
  int64_t* offset = nullptr;  // bytes in *writer
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
      // The whole object again: start the blob over.
      auto fresh = t->artifacts->NewWriter(t->max_bytes);
      if (!fresh.ok()) {
        t->failure = fresh.status();
        return 0;
      }
      *t->writer = std::move(*fresh);
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
  if (absl::Status s = (*t->writer)->Append(std::string_view(data, len));
      !s.ok()) {
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

absl::StatusOr<RemoteData::Fetched> RemoteFetcher::Fetch(
    const std::string& field, const std::string& uri, ArtifactStore* artifacts,
    int64_t max_bytes) {
  // ---- What the URI names ----
  Source src;
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
    src.expected = fragment.substr(7);
  }
  if (absl::StartsWith(rest, "http://")) {
    return Invalid(field, "plain http:// is not fetched; use https://");
  }
  if (absl::StartsWith(rest, "https://")) {
    ASSIGN_OR_RETURN(src.url, ParseHttpUrl(rest, field));
    const std::string path = src.url.target.substr(0, src.url.target.find('?'));
    src.name = path.substr(path.rfind('/') + 1);
  } else if (absl::StartsWith(rest, "s3://")) {
    src.s3 = true;
    const std::string bk = rest.substr(5);
    const size_t slash = bk.find('/');
    const std::string bucket = bk.substr(0, slash);
    const std::string key =
        slash == std::string::npos ? "" : bk.substr(slash + 1);
    if (!ValidBucket(bucket)) {
      return Invalid(field, absl::StrCat("\"", bucket,
                                         "\" is not an S3 bucket name "
                                         "(3-63 of a-z, 0-9, '.', '-')"));
    }
    if (key.empty() || key.size() > 1024 ||
        key.find('?') != std::string::npos) {
      return Invalid(field, "an s3:// URI names an object: s3://BUCKET/KEY");
    }
    src.name = key.substr(key.rfind('/') + 1);
    const std::string encoded = S3UriEncode(key, /*keep_slash=*/true);
    std::string url;
    if (!endpoint_.host.empty()) {
      src.s3_path = absl::StrCat("/", bucket, "/", encoded);
      url = absl::StrCat(endpoint_.scheme, "://", HostHeader(endpoint_),
                         src.s3_path);
    } else {
      src.s3_path = absl::StrCat("/", encoded);
      url = absl::StrCat("https://", bucket, ".s3.", options_.s3_region,
                         ".amazonaws.com", src.s3_path);
    }
    ASSIGN_OR_RETURN(src.url, ParseHttpUrl(url, field));
  } else {
    return Invalid(field, "is not an https:// or s3:// URI");
  }
  if (src.name.empty()) {
    return Invalid(field, "the URI names no file (its path ends in '/')");
  }
  src.display = src.s3 ? rest : src.url.Display();
  auto log = [&](const std::string& line) {
    if (options_.log) options_.log(line);
  };

  // ---- Attempts ----
  ASSIGN_OR_RETURN(auto writer, artifacts->NewWriter(max_bytes));
  int64_t offset = 0;
  absl::Status last;
  log(absl::StrCat("fetching ", src.display, " for ", field));
  for (int attempt = 1; attempt <= options_.max_attempts; ++attempt) {
    if (attempt > 1) {
      const absl::Duration wait =
          std::min(options_.first_retry * (1 << std::min(attempt - 2, 6)),
                   absl::Seconds(30));
      log(absl::StrCat("retrying ", src.display, " from byte ", offset, " in ",
                       absl::FormatDuration(wait), " (", last.message(), ")"));
      absl::SleepFor(wait);
    }
    // The policy again on each attempt, and the connection to the address
    // it checked: a name that re-resolves elsewhere cannot slip through.
    if (absl::Status s = options_.policy.Check(src.url, field); !s.ok()) {
      return absl::InvalidArgumentError(s.message());
    }
    auto ip = options_.policy.Resolve(src.url, field);
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
    if (src.s3 && !options_.credentials.empty()) {
      SigV4Request req;
      req.canonical_path = src.s3_path;
      req.payload_sha256 = kEmptyPayloadSha256;
      req.headers["host"] = HostHeader(src.url);
      req.headers["x-amz-date"] = AmzDate(absl::ToUnixSeconds(absl::Now()));
      req.headers["x-amz-content-sha256"] = kEmptyPayloadSha256;
      if (offset > 0)
        req.headers["range"] = absl::StrCat("bytes=", offset, "-");
      if (!options_.credentials.session_token.empty()) {
        req.headers["x-amz-security-token"] =
            options_.credentials.session_token;
      }
      for (const auto& [name, value] : req.headers) {
        if (name == "host" || name == "range") continue;
        headers.Add(absl::StrCat(name, ": ", value));
      }
      headers.Add(absl::StrCat("Authorization: ",
                               SigV4Authorization(req, options_.credentials,
                                                  options_.s3_region, "s3")));
    }
    Transfer t;
    t.artifacts = artifacts;
    t.max_bytes = max_bytes;
    t.writer = &writer;
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
        static_cast<long>(absl::ToInt64Milliseconds(options_.connect_timeout)));
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME,
                     static_cast<long>(std::max<int64_t>(
                         1, absl::ToInt64Seconds(options_.stall_timeout))));
    curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE,
                     static_cast<curl_off_t>(max_bytes - offset));
    if (!options_.ca_file.empty()) {
      curl_easy_setopt(curl, CURLOPT_CAINFO, options_.ca_file.c_str());
    }
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, OnHeader);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnBody);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &t);
    const CURLcode code = curl_easy_perform(curl);
    if (t.status == 0)
      curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &t.status);

    if (!t.failure.ok()) {
      if (absl::IsResourceExhausted(t.failure)) {
        return Invalid(field, absl::StrCat(src.display, " is larger than ",
                                           max_bytes, " bytes"));
      }
      last = t.failure;
      continue;
    }
    if (code == CURLE_FILESIZE_EXCEEDED) {
      return Invalid(field, absl::StrCat(src.display, " is larger than ",
                                         max_bytes, " bytes"));
    }
    if (code == CURLE_OK && (t.status == 200 || t.status == 206)) {
      last = absl::OkStatus();
      break;
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
    last = absl::UnavailableError(what);
    if (!RetryableStatus(t.status)) return Invalid(field, what);
  }
  if (!last.ok()) {
    return absl::UnavailableError(
        absl::StrCat(field, ": could not fetch ", src.display, " after ",
                     options_.max_attempts, " attempts: ", last.message()));
  }
  auto sha = writer->Commit(src.expected);
  if (!sha.ok()) {
    if (absl::IsDataLoss(sha.status())) {
      return Invalid(field, absl::StrCat("the content of ", src.display,
                                         " does not match its #sha256="));
    }
    return sha.status();
  }
  log(absl::StrCat("fetched ", src.display, ": ", offset, " bytes, sha256 ",
                   *sha));
  return Fetched{*sha, offset, src.name};
}

}  // namespace lathe::server

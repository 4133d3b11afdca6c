#include "server/fetch/sigv4.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <ctime>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace lathe::server {

const char kEmptyPayloadSha256[] =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

namespace {

std::string Sha256Hex(const std::string& data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(),
         digest);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

std::string Hmac(const std::string& key, const std::string& data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out,
       &len);
  return std::string(reinterpret_cast<const char*>(out), len);
}

// Header values are trimmed and inner runs of spaces folded to one.
std::string CanonicalValue(const std::string& value) {
  std::string out;
  bool space = false;
  for (char c : absl::StripAsciiWhitespace(value)) {
    if (c == ' ' || c == '\t') {
      space = true;
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

std::string SignedHeaders(const SigV4Request& request) {
  std::vector<std::string> names;
  for (const auto& [name, value] : request.headers) names.push_back(name);
  return absl::StrJoin(names, ";");  // std::map: already sorted
}

std::string Scope(const SigV4Request& request, const std::string& region,
                  const std::string& service) {
  auto it = request.headers.find("x-amz-date");
  const std::string date =
      it == request.headers.end() ? "" : it->second.substr(0, 8);
  return absl::StrCat(date, "/", region, "/", service, "/aws4_request");
}

}  // namespace

std::string S3UriEncode(const std::string& s, bool keep_slash) {
  std::string out;
  for (unsigned char c : s) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_' ||
        c == '~' || (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(&out, "%",
                      absl::AsciiStrToUpper(absl::BytesToHexString(
                          absl::string_view(reinterpret_cast<char*>(&c), 1))));
    }
  }
  return out;
}

std::string AmzDate(long long unix_seconds) {
  const time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  strftime(buf, sizeof(buf), "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

std::string CanonicalRequest(const SigV4Request& request) {
  std::string headers;
  for (const auto& [name, value] : request.headers) {
    absl::StrAppend(&headers, name, ":", CanonicalValue(value), "\n");
  }
  return absl::StrCat(request.method, "\n", request.canonical_path, "\n",
                      request.canonical_query, "\n", headers, "\n",
                      SignedHeaders(request), "\n", request.payload_sha256);
}

std::string StringToSign(const SigV4Request& request, const std::string& region,
                         const std::string& service) {
  auto it = request.headers.find("x-amz-date");
  const std::string when = it == request.headers.end() ? "" : it->second;
  return absl::StrCat("AWS4-HMAC-SHA256\n", when, "\n",
                      Scope(request, region, service), "\n",
                      Sha256Hex(CanonicalRequest(request)));
}

std::string SigV4Authorization(const SigV4Request& request,
                               const AwsCredentials& credentials,
                               const std::string& region,
                               const std::string& service) {
  const std::string scope = Scope(request, region, service);
  const std::string date = scope.substr(0, scope.find('/'));
  std::string key =
      Hmac(absl::StrCat("AWS4", credentials.secret_access_key), date);
  key = Hmac(key, region);
  key = Hmac(key, service);
  key = Hmac(key, "aws4_request");
  const std::string signature =
      absl::BytesToHexString(Hmac(key, StringToSign(request, region, service)));
  return absl::StrCat("AWS4-HMAC-SHA256 Credential=", credentials.access_key_id,
                      "/", scope, ",SignedHeaders=", SignedHeaders(request),
                      ",Signature=", signature);
}

}  // namespace lathe::server

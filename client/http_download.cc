#include "client/http_download.h"

#include <httplib.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace lathe::client {

namespace {

std::string HostOf(const std::string& target) {
  std::string host = target;
  if (const size_t scheme = host.find("://"); scheme != std::string::npos) {
    host = host.substr(scheme + 3);
  }
  if (const size_t colon = host.rfind(':');
      colon != std::string::npos &&
      host.find(']', colon) == std::string::npos) {
    host = host.substr(0, colon);
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return host;
}

absl::StatusCode CodeFor(int http_status) {
  switch (http_status) {
    case 400:
      return absl::StatusCode::kInvalidArgument;
    case 401:
      return absl::StatusCode::kUnauthenticated;
    case 403:
      return absl::StatusCode::kPermissionDenied;
    case 404:
      return absl::StatusCode::kNotFound;
    case 416:
      return absl::StatusCode::kOutOfRange;
    case 429:
      return absl::StatusCode::kResourceExhausted;
    default:
      return http_status >= 500 ? absl::StatusCode::kUnavailable
                                : absl::StatusCode::kUnknown;
  }
}

}  // namespace

absl::Status HttpDownload(const std::string& target, int port, bool tls,
                          const ChannelOptions& options,
                          const std::string& url_path, int64_t offset,
                          std::ostream& out, int64_t* written) {
  const std::string host = HostOf(target);
  std::unique_ptr<httplib::ClientImpl> http;
  if (tls) {
    auto ssl = std::make_unique<httplib::SSLClient>(
        host, port, options.tls.cert, options.tls.key);
    if (!options.tls.ca.empty()) ssl->set_ca_cert_path(options.tls.ca.c_str());
    ssl->enable_server_certificate_verification(true);
    http = std::move(ssl);
  } else {
    http = std::make_unique<httplib::ClientImpl>(host, port);
  }
  http->set_connection_timeout(5, 0);
  http->set_read_timeout(60, 0);
  httplib::Headers headers = {{"Authorization", "Bearer " + options.token}};
  if (offset > 0) {
    headers.emplace("Range", absl::StrCat("bytes=", offset, "-"));
  }
  int status = 0;
  std::string error_body;
  *written = 0;
  auto result = http->Get(
      url_path, headers,
      [&](const httplib::Response& res) {
        status = res.status;
        // A whole file where a resume was asked for: stop at once.
        return !(offset > 0 && status == 200);
      },
      [&](const char* data, size_t n) {
        const bool ok = offset > 0 ? status == 206 : status == 200;
        if (!ok) {
          if (error_body.size() < 8192) error_body.append(data, n);
          return true;
        }
        out.write(data, static_cast<std::streamsize>(n));
        *written += static_cast<int64_t>(n);
        return static_cast<bool>(out);
      });
  if (!result) {
    return absl::UnavailableError(
        absl::StrCat("cannot reach the server's HTTP listener at ", host, ":",
                     port, ": ", httplib::to_string(result.error())));
  }
  if (status != 200 && status != 206) {
    auto body = nlohmann::json::parse(error_body, nullptr, false);
    std::string message = absl::StrCat("HTTP ", status);
    if (body.is_object() && body.contains("error") &&
        body["error"].is_object() && body["error"].contains("message") &&
        body["error"]["message"].is_string()) {
      message = body["error"]["message"].get<std::string>();
    }
    return absl::Status(CodeFor(status), message);
  }
  if (!out) return absl::InternalError("cannot write the downloaded bytes");
  return absl::OkStatus();
}

}  // namespace lathe::client

#include "server/http/http_util.h"

#include <cctype>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"
#include "server/api/services.h"
#include "server/core/identities.h"

namespace lathe::server::http {

std::string DumpJson(const nlohmann::json& j) {
  // Strings may carry what a client sent (a path, a name): bytes that are
  // not UTF-8 are replaced rather than thrown on.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string ToJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

grpc::Status FromJson(const std::string& body, google::protobuf::Message* m) {
  if (body.empty()) return grpc::Status::OK;
  google::protobuf::util::JsonParseOptions o;
  auto s = google::protobuf::util::JsonStringToMessage(body, m, o);
  if (!s.ok()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("request body: ", s.message().ToString()));
  }
  return grpc::Status::OK;
}

int HttpStatusOf(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return 200;
    case grpc::StatusCode::CANCELLED:
      return 499;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
      return 400;
    case grpc::StatusCode::UNAUTHENTICATED:
      return 401;
    case grpc::StatusCode::PERMISSION_DENIED:
      return 403;
    case grpc::StatusCode::NOT_FOUND:
      return 404;
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::ABORTED:
      return 409;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return 429;
    case grpc::StatusCode::UNIMPLEMENTED:
      return 501;
    case grpc::StatusCode::UNAVAILABLE:
      return 503;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return 504;
    default:
      return 500;
  }
}

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

std::string FieldOf(const std::string& message) {
  // "spec.params[learning_rate]: ..." names its field before the colon.
  const size_t colon = message.find(": ");
  if (colon == std::string::npos || colon == 0 || colon > 128) return "";
  for (size_t i = 0; i < colon; ++i) {
    const unsigned char c = static_cast<unsigned char>(message[i]);
    if (!std::isalnum(c) && c != '_' && c != '.' && c != '[' && c != ']' &&
        c != '-') {
      return "";
    }
  }
  return message.substr(0, colon);
}

void WriteError(httplib::Response& res, const grpc::Status& status) {
  const int http_status = HttpStatusOf(status.error_code());
  std::string message = status.error_message();
  // The core's hint names the CLI's ways to give a token; over HTTP there
  // is one.
  if (message == kNoTokenHint) {
    message = "no token: send the header `Authorization: Bearer TOKEN`";
  }
  const std::string field =
      status.error_code() == grpc::StatusCode::INVALID_ARGUMENT
          ? FieldOf(message)
          : "";
  nlohmann::json error = {
      {"code", CodeName(status.error_code())},
      {"http_status", http_status},
      {"message", message},
      {"type", http_status >= 500   ? "server_error"
               : http_status == 401 ? "authentication_error"
               : http_status == 403 ? "permission_error"
               : http_status == 404 ? "not_found_error"
               : http_status == 429 ? "rate_limit_error"
                                    : "invalid_request_error"},
      {"param", field.empty() ? nlohmann::json() : nlohmann::json(field)}};
  res.status = http_status;
  if (http_status == 401) res.set_header("WWW-Authenticate", "Bearer");
  // Asking again cannot help: the name is taken.
  if (status.error_code() == grpc::StatusCode::ALREADY_EXISTS) {
    res.set_header("x-should-retry", "false");
  }
  res.set_content(DumpJson(nlohmann::json{{"error", error}}),
                  "application/json");
}

void WriteJson(httplib::Response& res, const google::protobuf::Message& m) {
  res.status = 200;
  res.set_content(ToJson(m), "application/json");
}

std::unique_ptr<grpc::ClientContext> CallContext(const httplib::Request& req) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  const std::string auth = req.get_header_value("Authorization");
  if (!auth.empty()) ctx->AddMetadata("authorization", auth);
  ctx->AddMetadata("x-lathe-gateway", GatewayKey());
  ctx->AddMetadata("x-lathe-http-peer",
                   absl::StrCat(req.remote_addr, ":", req.remote_port));
  return ctx;
}

grpc::Status ReadBody(const httplib::Request& req,
                      const httplib::ContentReader& reader, size_t limit,
                      std::string* body) {
  if (req.is_multipart_form_data()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "Content-Type: send JSON, not multipart/form-data");
  }
  bool too_big = false;
  const bool complete = reader([&](const char* data, size_t n) {
    if (body->size() + n > limit) {
      too_big = true;
      return false;
    }
    body->append(data, n);
    return true;
  });
  if (too_big) {
    return grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        absl::StrCat("request body: larger than ", limit, " bytes"));
  }
  if (!complete) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "request body: incomplete or too large");
  }
  return grpc::Status::OK;
}

}  // namespace lathe::server::http

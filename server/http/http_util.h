// Internal to server/http: what the route files share. JSON in and out by
// protobuf's JSON mapping (proto field names, as `lathe --output json`
// prints), the one mapping from a gRPC status to an HTTP error, the
// in-process call context, and request bodies read with a bound.
#ifndef LATHE_SERVER_HTTP_HTTP_UTIL_H_
#define LATHE_SERVER_HTTP_HTTP_UTIL_H_

#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <memory>
#include <string>

#include "google/protobuf/message.h"
#include "nlohmann/json.hpp"

namespace lathe::server::http {

// Bodies of JSON requests; dataset uploads have their own bound.
inline constexpr size_t kMaxJsonBody = 1 << 20;

std::string ToJson(const google::protobuf::Message& m);
// nlohmann's dump, with bytes that are not UTF-8 replaced (never thrown on).
std::string DumpJson(const nlohmann::json& j);
// INVALID_ARGUMENT naming what is wrong with the body.
grpc::Status FromJson(const std::string& body, google::protobuf::Message* m);

// The HTTP status for a gRPC code.
int HttpStatusOf(grpc::StatusCode code);
// The gRPC code's name ("NOT_FOUND").
const char* CodeName(grpc::StatusCode code);
// The field an INVALID_ARGUMENT message names ("spec.task: ..."), or "".
std::string FieldOf(const std::string& message);
// Writes `status` as {"error": {"code", "http_status", "message", "type",
// "param"}}: the gRPC code and words, in a shape OpenAI's clients also read.
void WriteError(httplib::Response& res, const grpc::Status& status);
void WriteJson(httplib::Response& res, const google::protobuf::Message& m);

// A call on the in-process channel on behalf of `req`: its Authorization
// header, and its client's address for the audit log.
std::unique_ptr<grpc::ClientContext> CallContext(const httplib::Request& req);

// The JSON body of `req`, read through `reader`, at most `limit` bytes;
// RESOURCE_EXHAUSTED past it, INVALID_ARGUMENT for a multipart body or
// one that stopped short.
grpc::Status ReadBody(const httplib::Request& req,
                      const httplib::ContentReader& reader, size_t limit,
                      std::string* body);

}  // namespace lathe::server::http

#endif  // LATHE_SERVER_HTTP_HTTP_UTIL_H_

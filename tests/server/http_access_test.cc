// The HTTP listener enforces what gRPC does: each route is called with the
// same bad credentials and the same roles as the gRPC methods in
// access_test.cc, and must answer as the method it stands for (401 where
// gRPC says UNAUTHENTICATED, 403 where it says PERMISSION_DENIED, neither
// where the role may call it). Real HTTP over loopback (cpp-httplib's
// client) to the real gateway over the real services.
#include <httplib.h>

#include <thread>

#include "nlohmann/json.hpp"
#include "tests/server/access_fixture.h"

namespace lathe::server {
namespace {

struct Route {
  std::string method;  // GET, POST, DELETE
  std::string path;
  std::string body;
  std::string rpc;  // the Service.Method it stands for
};

// Every route of the JSON API. A job that does not exist: a role that may
// call the method gets 404 for it, one that may not gets 403 first.
std::vector<Route> Routes() {
  const std::string job = "/v1/jobs/job-000000000000";
  return {
      {"GET", "/v1/jobs", "", "JobService.ListJobs"},
      {"POST", "/v1/jobs", "{\"spec\":{}}", "JobService.SubmitJob"},
      {"GET", job, "", "JobService.GetJob"},
      {"POST", job + ":cancel", "", "JobService.CancelJob"},
      {"POST", job + ":pause", "", "JobService.PauseJob"},
      {"POST", job + ":resume", "", "JobService.ResumeJob"},
      {"POST", job + ":checkpoint", "", "JobService.RequestCheckpoint"},
      {"GET", job + "/events", "", "JobService.WatchJob"},
      {"GET", job + "/checkpoints", "", "JobService.ListCheckpoints"},
      {"GET", job + "/events?json", "", "JobService.ListJobEvents"},
      {"GET", job + "/checkpoints/latest/files/model.safetensors", "",
       "JobService.DownloadCheckpointFile"},
      {"POST", "/v1/datasets?name=d.jsonl", "{\"text\":\"a\",\"label\":1}\n",
       "DatasetService.UploadDataset"},
      {"GET", "/v1/datasets", "", "DatasetService.ListDatasets"},
      {"GET", "/v1/datasets/dataset:" + std::string(64, 'a'), "",
       "DatasetService.GetDataset"},
      {"DELETE", "/v1/datasets/dataset:" + std::string(64, 'a'), "",
       "DatasetService.DeleteDataset"},
      {"GET", "/v1/models", "", "ModelService.ListModels"},
      {"GET", "/v1/models/none", "", "ModelService.GetModel"},
      {"DELETE", "/v1/models/none", "", "ModelService.DeleteModel"},
      {"GET", "/v1/whoami", "", "AdminService.WhoAmI"},
      {"GET", "/v1/workers", "", "JobService.ListWorkers"},
  };
}

// The OpenAI-compatible routes, each with the Lathe method it calls.
std::vector<Route> OpenAiRoutes() {
  const std::string job = "/v1/fine_tuning/jobs/job-000000000000";
  const std::string file = "/v1/files/file-" + std::string(64, 'a');
  return {
      {"POST", "/v1/files", "{\"text\":\"a\",\"label\":1}\n",
       "DatasetService.UploadDataset"},
      {"GET", "/v1/files", "", "DatasetService.ListDatasets"},
      {"GET", file, "", "DatasetService.GetDataset"},
      {"DELETE", file, "", "DatasetService.DeleteDataset"},
      {"POST", "/v1/fine_tuning/jobs",
       "{\"model\":\"preset:gpt2-tiny\",\"training_file\":\"file-" +
           std::string(64, 'a') + "\"}",
       "JobService.SubmitJob"},
      {"GET", "/v1/fine_tuning/jobs", "", "JobService.ListJobs"},
      {"GET", job, "", "JobService.GetJob"},
      {"POST", job + "/cancel", "", "JobService.CancelJob"},
      {"POST", job + "/pause", "", "JobService.PauseJob"},
      {"POST", job + "/resume", "", "JobService.ResumeJob"},
      {"GET", job + "/events", "", "JobService.ListJobEvents"},
      {"GET", job + "/checkpoints", "", "JobService.ListCheckpoints"},
  };
}

// Methods of the user-facing services that have no HTTP route on purpose:
// pushing a model directory stays with the CLI, and accounts are managed
// with `lathe users` and `lathe tokens`.
const std::set<std::string>& NotOverHttp() {
  static const auto* s = new std::set<std::string>{
      "ModelService.PushModel",   "AdminService.CreateUser",
      "AdminService.ListUsers",   "AdminService.DisableUser",
      "AdminService.CreateToken", "AdminService.ListTokens",
      "AdminService.RevokeToken", "AdminService.ListAudit",
  };
  return *s;
}

class HttpAccessTest : public AccessTest {
 protected:
  httplib::Result Send(const Route& r, const std::string& authorization) {
    httplib::Client client(Http());
    client.set_read_timeout(10, 0);
    httplib::Headers headers;
    if (!authorization.empty()) {
      headers.emplace("Authorization", authorization);
    }
    // "?json" marks the event list: the same path as the event stream,
    // asked for as JSON.
    if (r.path.size() > 5 && r.path.substr(r.path.size() - 5) == "?json") {
      headers.emplace("Accept", "application/json");
      return client.Get(r.path.substr(0, r.path.size() - 5), headers);
    }
    if (r.method == "GET") return client.Get(r.path, headers);
    if (r.path == "/v1/files") {  // multipart, as OpenAI's clients send it
      return client.Post(r.path, headers,
                         httplib::MultipartFormDataItems{
                             {"file", r.body, "d.jsonl", "application/jsonl"},
                             {"purpose", "fine-tune", "", ""}});
    }
    if (r.method == "DELETE") return client.Delete(r.path, headers);
    return client.Post(r.path, headers, r.body, "application/json");
  }
  int Status(const Route& r, const std::string& authorization) {
    auto res = Send(r, authorization);
    return res ? res->status : -1;
  }
};

TEST(HttpRouteTableTest, EveryClientMethodHasARouteOrIsKeptOffHttp) {
  std::set<std::string> routed;
  for (const auto& r : Routes()) routed.insert(r.rpc);
  for (const auto& m : ApiMethods()) {
    if (m.rfind("WorkerService.", 0) == 0) continue;  // workers speak gRPC
    EXPECT_TRUE(routed.count(m) + NotOverHttp().count(m) == 1)
        << m << " needs an HTTP route (and a row in Routes()) or a place in "
        << "NotOverHttp()";
  }
}

TEST_F(HttpAccessTest, EveryRouteRefusesABadTokenAndAdmitsOnlyItsRoles) {
  const auto bad = BadCredentials();
  const auto roles = RoleTokens();
  std::vector<Route> all = Routes();
  for (const auto& r : OpenAiRoutes()) all.push_back(r);
  for (const auto& route : all) {
    const std::string what = route.method + " " + route.path;
    auto row = Matrix().find(route.rpc);
    ASSERT_NE(row, Matrix().end()) << route.rpc;
    for (const auto& [name, header] : bad) {
      auto res = Send(route, header);
      ASSERT_TRUE(res) << what;
      EXPECT_EQ(res->status, 401) << what << " with " << name;
      EXPECT_EQ(res->get_header_value("WWW-Authenticate"), "Bearer") << what;
      auto body = nlohmann::json::parse(res->body, nullptr, false);
      EXPECT_EQ(body["error"]["code"], "UNAUTHENTICATED") << what;
    }
    for (const auto& [role, header] : roles) {
      const int status = Status(route, header);
      if (row->second.count(role) > 0) {
        EXPECT_NE(status, 401) << what << " as " << Role_Name(role);
        EXPECT_NE(status, 403) << what << " as " << Role_Name(role);
        EXPECT_GT(status, 0) << what;
      } else {
        EXPECT_EQ(status, 403) << what << " as " << Role_Name(role);
      }
    }
  }
}

TEST_F(HttpAccessTest, AnotherTeamsJobIsNotFoundOnEveryRoute) {
  const std::string blue = Dataset("blue", "{\"text\":\"b\",\"label\":1}\n");
  auto bob_job = manager_->Submit(Spec(blue), "", Who(bob_));
  ASSERT_TRUE(bob_job.ok()) << bob_job.status();
  const std::string job = "/v1/jobs/" + bob_job->id();
  for (const auto& route : std::vector<Route>{
           {"GET", job, "", ""},
           {"POST", job + ":cancel", "", ""},
           {"POST", job + ":pause", "", ""},
           {"POST", job + ":resume", "", ""},
           {"POST", job + ":checkpoint", "", ""},
           {"GET", job + "/events", "", ""},
           {"GET", job + "/checkpoints", "", ""},
           {"GET", job + "/checkpoints/latest/files/config.json", "", ""}}) {
    EXPECT_EQ(Status(route, alice_), 404) << route.method << " " << route.path;
  }
  EXPECT_EQ(Status({"GET", job, "", ""}, bob_), 200);
  EXPECT_EQ(Status({"GET", job, "", ""}, admin_), 200);
  auto listed = Send({"GET", "/v1/jobs", "", ""}, alice_);
  ASSERT_TRUE(listed);
  auto body = nlohmann::json::parse(listed->body);
  EXPECT_FALSE(body.contains("jobs")) << listed->body;
  // A submit naming bob's dataset reads as a missing dataset.
  const std::string submit =
      "{\"spec\":{\"task\":\"text-classification\","
      "\"model\":\"preset:bert-tiny\",\"train_data\":\"" +
      blue + "\"}}";
  auto res = Send({"POST", "/v1/jobs", submit, ""}, alice_);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404) << res->body;
}

TEST_F(HttpAccessTest, ErrorsNameTheFieldAndTheAuditLogNamesTheHttpClient) {
  auto res = Send({"POST", "/v1/jobs",
                   "{\"spec\":{\"task\":\"poetry\",\"model\":\"preset:bert-"
                   "tiny\"}}",
                   ""},
                  alice_);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  auto body = nlohmann::json::parse(res->body);
  EXPECT_EQ(body["error"]["code"], "INVALID_ARGUMENT");
  EXPECT_EQ(body["error"]["param"], "spec.task");
  EXPECT_EQ(body["error"]["http_status"], 400);
  res = Send({"POST", "/v1/jobs", "{\"spec\":{\"colour\":1}}", ""}, alice_);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400) << res->body;
  res = Send({"GET", "/v1/jobs?page_size=ten", "", ""}, alice_);
  ASSERT_TRUE(res);
  EXPECT_EQ(nlohmann::json::parse(res->body)["error"]["param"], "page_size");
  res = Send({"GET", "/v1/no-such-thing", "", ""}, alice_);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  // A refusal over HTTP is audited with the HTTP client's address.
  EXPECT_EQ(Status({"POST", "/v1/jobs", "{}", ""}, vic_), 403);
  auto admin = lathe::v1::AdminService::NewStub(channel_);
  lathe::v1::ListAuditResponse audit;
  ASSERT_TRUE(admin->ListAudit(As(admin_).get(), {}, &audit).ok());
  ASSERT_GE(audit.entries_size(), 1);
  EXPECT_EQ(audit.entries(0).user(), "vic");
  EXPECT_EQ(audit.entries(0).code(), "PERMISSION_DENIED");
  EXPECT_EQ(audit.entries(0).peer().rfind("http:127.0.0.1:", 0), 0u)
      << audit.entries(0).peer();
}

}  // namespace
}  // namespace lathe::server

namespace lathe::server {
namespace {

TEST_F(HttpAccessTest, HostileRequestsGetAnErrorAndTheListenerKeepsServing) {
  httplib::Client client(Http());
  httplib::Headers auth = {{"Authorization", alice_}};
  // A path that is not UTF-8 (its error message quotes it).
  auto bad = client.Get("/%FF%FE", auth);
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 404);
  // A Range is for checkpoint files: an error or a JSON answer is whole.
  httplib::Headers ranged = {{"Authorization", alice_}, {"Range", "bytes=5-"}};
  auto missing = client.Get("/v1/jobs/job-000000000000", ranged);
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_FALSE(
      nlohmann::json::parse(missing->body, nullptr, false).is_discarded())
      << missing->body;
  // An upload past the listener's limit (1 MiB here) stores nothing.
  auto big = client.Post("/v1/datasets?name=big.jsonl", auth,
                         std::string((1 << 20) + 10, 'x'), "text/plain");
  ASSERT_TRUE(big);
  EXPECT_GE(big->status, 400);
  // Multipart where JSON is expected, and a method that is not an object.
  auto multi = client.Post(
      "/v1/jobs", auth,
      httplib::MultipartFormDataItems{{"spec", "{}", "", "application/json"}});
  ASSERT_TRUE(multi);
  EXPECT_EQ(multi->status, 400);
  auto method =
      client.Post("/v1/fine_tuning/jobs", auth,
                  "{\"model\":\"preset:gpt2-tiny\",\"training_file\":\"file-" +
                      std::string(64, 'a') + "\",\"method\":\"dpo\"}",
                  "application/json");
  ASSERT_TRUE(method);
  EXPECT_EQ(method->status, 400);
  EXPECT_EQ(nlohmann::json::parse(method->body)["error"]["param"], "method");
  // Still serving, and nothing was stored by the refused upload.
  auto list = client.Get("/v1/datasets", auth);
  ASSERT_TRUE(list);
  EXPECT_EQ(list->status, 200);
  EXPECT_FALSE(nlohmann::json::parse(list->body).contains("datasets"))
      << list->body;
}

TEST_F(HttpAccessTest, EachTeamSeesTheNameItGaveTheSameBytes) {
  httplib::Client client(Http());
  const std::string rows = "{\"text\":\"a\",\"label\":1}\n";
  auto up = [&](const std::string& who, const std::string& name) {
    auto res = client.Post("/v1/datasets?name=" + name,
                           {{"Authorization", who}}, rows, "text/plain");
    EXPECT_TRUE(res && res->status == 200) << (res ? res->body : "");
    return nlohmann::json::parse(res->body)["dataset"];
  };
  EXPECT_EQ(up(alice_, "red-secret-customers.jsonl")["name"],
            "red-secret-customers.jsonl");
  EXPECT_EQ(up(bob_, "b.jsonl")["name"], "b.jsonl");
  auto names = [&](const std::string& who) {
    auto res = client.Get("/v1/datasets", {{"Authorization", who}});
    std::vector<std::string> out;
    const nlohmann::json body = nlohmann::json::parse(res->body);
    if (!body.contains("datasets")) return out;
    for (const auto& d : body["datasets"]) {
      out.push_back(d["name"]);
    }
    return out;
  };
  EXPECT_EQ(names(bob_), std::vector<std::string>{"b.jsonl"});
  EXPECT_EQ(names(alice_),
            std::vector<std::string>{"red-secret-customers.jsonl"});
  // Bob deleting his copy leaves alice's.
  const std::string ref = "dataset:" + Sha256Hex(rows);
  auto del = client.Delete("/v1/datasets/" + ref, {{"Authorization", bob_}});
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 200);
  EXPECT_TRUE(names(bob_).empty());
  EXPECT_EQ(names(alice_).size(), 1u);
}

}  // namespace
}  // namespace lathe::server

// The access table covers the whole API: every method of every service in
// lathe/v1/lathe.proto has a rule, so an RPC added without one fails here,
// and a method without a rule is refused.
#include "server/api/access.h"

#include <google/protobuf/descriptor.h>
#include <gtest/gtest.h>

#include "lathe/v1/lathe.pb.h"

namespace lathe::server {
namespace {

TEST(AccessTest, EveryMethodOfTheApiHasARule) {
  const google::protobuf::FileDescriptor* file =
      lathe::v1::Job::descriptor()->file();
  ASSERT_GE(file->service_count(), 4);
  int methods = 0;
  for (int s = 0; s < file->service_count(); ++s) {
    const auto* service = file->service(s);
    for (int m = 0; m < service->method_count(); ++m) {
      const std::string name = service->method(m)->full_name();
      ++methods;
      const AccessRule* rule = AccessPolicy::RuleFor(name);
      ASSERT_NE(rule, nullptr) << name << " has no access rule";
      // The worker service serves workers only, the others people.
      const bool worker = service->name() == "WorkerService";
      EXPECT_EQ(rule->audience, worker ? Audience::kWorker : Audience::kClient)
          << name;
      EXPECT_TRUE(AccessPolicy().Check(name, Caller{"ipv4:127.0.0.1:1"}).ok())
          << name;
    }
  }
  EXPECT_GE(methods, 24);
}

TEST(AccessTest, AMethodWithoutARuleIsRefused) {
  auto s = AccessPolicy().Check("lathe.v1.JobService.DropAllJobs",
                                Caller{"ipv4:127.0.0.1:1"});
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(AccessPolicy::RuleFor("lathe.v1.JobService.DropAllJobs"), nullptr);
}

TEST(AccessTest, ReadsAndWritesAreTold) {
  EXPECT_FALSE(AccessPolicy::RuleFor("lathe.v1.JobService.GetJob")->mutating);
  EXPECT_TRUE(AccessPolicy::RuleFor("lathe.v1.JobService.CancelJob")->mutating);
}

}  // namespace
}  // namespace lathe::server

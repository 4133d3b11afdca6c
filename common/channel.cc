#include "common/channel.h"

#include <grpcpp/support/client_interceptor.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace lathe {
namespace {

// Adds the bearer token to the initial metadata of every call.
class TokenInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit TokenInterceptor(const std::string* header) : header_(header) {}
  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::
                PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization", *header_);
    }
    methods->Proceed();
  }

 private:
  const std::string* header_;
};

class TokenInterceptorFactory final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit TokenInterceptorFactory(std::string token)
      : header_("Bearer " + std::move(token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new TokenInterceptor(&header_);
  }

 private:
  // Lives as long as the channel, which owns the factory.
  const std::string header_;
};

absl::StatusOr<std::string> FirstLine(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file ", path, ": cannot read it"));
  }
  if ((st.st_mode & 077) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "token file ", path,
        ": other users can read it; make it yours alone (chmod 600)"));
  }
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file ", path, ": cannot read it"));
  }
  line = std::string(absl::StripAsciiWhitespace(line));
  if (line.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file ", path, ": empty"));
  }
  return line;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(
    const std::string& target, const ChannelOptions& options,
    const grpc::ChannelArguments& args) {
  auto creds = ClientCredentials(options.tls);
  if (!creds.ok()) return creds.status();
  std::vector<
      std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      interceptors;
  if (!options.token.empty()) {
    interceptors.push_back(
        std::make_unique<TokenInterceptorFactory>(options.token));
  }
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      target, *creds, args, std::move(interceptors));
}

absl::StatusOr<std::string> ReadToken(const std::string& token_file,
                                      const std::string& fallback_file) {
  if (!token_file.empty()) return FirstLine(token_file);
  if (const char* env = std::getenv("LATHE_TOKEN"); env && *env) {
    return std::string(absl::StripAsciiWhitespace(env));
  }
  struct stat st;
  if (!fallback_file.empty() && ::stat(fallback_file.c_str(), &st) == 0) {
    return FirstLine(fallback_file);
  }
  return std::string();
}

void KeepFreedMemoryForStreaming() {
#if defined(__GLIBC__)
  ::mallopt(M_TRIM_THRESHOLD, 64 << 20);
#endif
}

}  // namespace lathe

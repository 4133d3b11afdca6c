#include "client/tls_flags.h"

#include <cstdlib>
#include <string>

namespace lathe::client {
namespace {

std::string FlagOrEnv(const ParsedArgs& args, const std::string& flag,
                      const char* env) {
  std::string v = args.Get(flag);
  if (v.empty()) {
    if (const char* e = std::getenv(env)) v = e;
  }
  return v;
}

}  // namespace

lathe::TlsFiles TlsFilesFromArgs(const ParsedArgs& args) {
  lathe::TlsFiles tls;
  tls.ca = FlagOrEnv(args, "tls-ca", "LATHE_TLS_CA");
  tls.cert = FlagOrEnv(args, "tls-cert", "LATHE_TLS_CERT");
  tls.key = FlagOrEnv(args, "tls-key", "LATHE_TLS_KEY");
  return tls;
}

}  // namespace lathe::client

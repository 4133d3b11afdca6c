#include "tests/support/test_certs.h"

#include <filesystem>
#include <vector>

#include "tests/support/system.h"

namespace lathe::testing {
namespace {

bool Openssl(std::vector<std::string> args, std::string* why) {
  args.insert(args.begin(), {"/usr/bin/env", "openssl"});
  CommandResult r = RunCommand(args);
  if (r.exit_code == 0) return true;
  *why = "openssl " + args[2] + " failed (" + std::to_string(r.exit_code) +
         "): " + r.err;
  return false;
}

// A P-256 key in `key` and a certificate for it in `cert`: self-signed when
// `ca` is null, else signed by that set's CA.
bool Issue(const std::string& subject, const std::vector<std::string>& exts,
           const CertSet* ca, const std::string& cert, const std::string& key,
           std::string* why) {
  std::vector<std::string> args = {
      "req",    "-x509",    "-newkey",
      "ec",     "-pkeyopt", "ec_paramgen_curve:prime256v1",
      "-nodes", "-keyout",  key,
      "-out",   cert,       "-days",
      "2",      "-subj",    subject};
  if (ca != nullptr) {
    args.insert(args.end(), {"-CA", ca->ca, "-CAkey", ca->ca_key});
  }
  for (const auto& e : exts) args.insert(args.end(), {"-addext", e});
  return Openssl(args, why);
}

bool MakeSet(const std::string& dir, const std::string& name, CertSet* set,
             std::string* why) {
  std::filesystem::create_directories(dir);
  set->ca = dir + "/ca.pem";
  set->ca_key = dir + "/ca.key";
  set->server_cert = dir + "/server.pem";
  set->server_key = dir + "/server.key";
  set->client_cert = dir + "/client.pem";
  set->client_key = dir + "/client.key";
  return Issue("/CN=Lathe test CA " + name,
               {"basicConstraints=critical,CA:TRUE",
                "keyUsage=critical,keyCertSign,cRLSign"},
               nullptr, set->ca, set->ca_key, why) &&
         Issue("/CN=localhost",
               {"basicConstraints=critical,CA:FALSE",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "extendedKeyUsage=serverAuth"},
               set, set->server_cert, set->server_key, why) &&
         Issue("/CN=lathe-test-client-" + name,
               {"basicConstraints=critical,CA:FALSE",
                "extendedKeyUsage=clientAuth"},
               set, set->client_cert, set->client_key, why);
}

}  // namespace

bool MakeTestCerts(const std::string& dir, TestCerts* certs, std::string* why) {
  return MakeSet(dir + "/a", "A", &certs->a, why) &&
         MakeSet(dir + "/b", "B", &certs->b, why);
}

}  // namespace lathe::testing

// Certificates for transport-security tests, made at test time by the
// `openssl` command (nothing secret is committed): two unrelated CAs, and
// for each a server certificate for localhost and 127.0.0.1 (so that dialing
// 127.0.0.1:PORT verifies) and a client certificate. P-256 keys, valid for
// two days.
#ifndef LATHE_TESTS_SUPPORT_TEST_CERTS_H_
#define LATHE_TESTS_SUPPORT_TEST_CERTS_H_

#include <string>

namespace lathe::testing {

// PEM files of one CA and what it signed.
struct CertSet {
  std::string ca;      // the CA certificate
  std::string ca_key;  // its key, to issue more
  std::string server_cert;
  std::string server_key;
  std::string client_cert;
  std::string client_key;
};

struct TestCerts {
  CertSet a;  // what the tests trust
  CertSet b;  // unrelated to `a`: a wrong CA, and the rotation's target
};

// Writes the files under `dir` (dir/a/..., dir/b/...). Returns false with
// openssl's words in *why when a command fails.
bool MakeTestCerts(const std::string& dir, TestCerts* certs, std::string* why);

}  // namespace lathe::testing

#endif  // LATHE_TESTS_SUPPORT_TEST_CERTS_H_

#include "server/tls.h"

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace lathe::server {
namespace {

absl::Status FlagError(const std::string& flag, const std::string& path,
                       const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": ", what));
}

absl::StatusOr<std::string> ReadPem(const std::string& flag,
                                    const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return FlagError(flag, path, "cannot read the file");
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return FlagError(flag, path, "cannot read the file");
  return ss.str();
}

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Bio = std::unique_ptr<BIO, BioDeleter>;
using Cert = std::unique_ptr<X509, X509Deleter>;

Bio MemoryBio(const std::string& pem) {
  return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// OpenSSL's default would ask for a passphrase on the terminal; a key that
// needs one is refused instead.
int NoPassphrase(char*, int, int, void*) { return 0; }

// The first certificate in `pem`, or null.
Cert FirstCertificate(const std::string& pem) {
  Bio bio = MemoryBio(pem);
  return Cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

}  // namespace

absl::Status CheckServerTlsFiles(const ServerTlsFiles& files) {
  if (!files.cert.empty() && files.key.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert needs --tls-key (the certificate's private key)");
  }
  if (files.cert.empty() && !files.key.empty()) {
    return absl::InvalidArgumentError(
        "--tls-key needs --tls-cert (the certificate it belongs to)");
  }
  if (!files.client_ca.empty() && files.cert.empty()) {
    return absl::InvalidArgumentError(
        "--tls-client-ca needs --tls-cert and --tls-key: client "
        "certificates are only asked for over TLS");
  }
  if (!files.enabled()) return absl::OkStatus();

  ASSIGN_OR_RETURN(const std::string cert_pem,
                   ReadPem("--tls-cert", files.cert));
  Cert cert = FirstCertificate(cert_pem);
  if (cert == nullptr) {
    return FlagError("--tls-cert", files.cert, "holds no PEM certificate");
  }
  ASSIGN_OR_RETURN(const std::string key_pem, ReadPem("--tls-key", files.key));
  Bio key_bio = MemoryBio(key_pem);
  std::unique_ptr<EVP_PKEY, KeyDeleter> key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, NoPassphrase, nullptr));
  if (key == nullptr) {
    return FlagError("--tls-key", files.key,
                     "holds no PEM private key (or one with a passphrase, "
                     "which is not supported)");
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    return FlagError("--tls-key", files.key,
                     absl::StrCat("is not the private key of the first "
                                  "certificate in --tls-cert ",
                                  files.cert));
  }
  if (!files.client_ca.empty()) {
    ASSIGN_OR_RETURN(const std::string ca_pem,
                     ReadPem("--tls-client-ca", files.client_ca));
    if (FirstCertificate(ca_pem) == nullptr) {
      return FlagError("--tls-client-ca", files.client_ca,
                       "holds no PEM certificate");
    }
  }
  return absl::OkStatus();
}

std::string CertificateHostName(const std::string& cert_path) {
  auto pem = ReadPem("--tls-cert", cert_path);
  if (!pem.ok()) return "";
  Cert cert = FirstCertificate(*pem);
  if (cert == nullptr) return "";
  std::string name;
  auto* names = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert.get(), NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type == GEN_DNS) {
      const ASN1_IA5STRING* dns = n->d.dNSName;
      name.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(dns)),
                  static_cast<size_t>(ASN1_STRING_length(dns)));
      break;
    }
  }
  GENERAL_NAMES_free(names);
  if (!name.empty()) return name;
  char cn[256];
  const int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()),
                                          NID_commonName, cn, sizeof(cn));
  return n > 0 ? std::string(cn, static_cast<size_t>(n)) : "";
}

std::shared_ptr<grpc::ServerCredentials> ServerCredentials(
    const ServerTlsFiles& files) {
  if (!files.enabled()) return grpc::InsecureServerCredentials();
  auto provider =
      std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
          files.key, files.cert, files.client_ca, kTlsRefreshSeconds);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (!files.client_ca.empty()) {
    options.watch_root_certs();
    options.set_cert_request_type(
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

}  // namespace lathe::server

#include "server/webhooks/signature.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace lathe::server {

std::string NewWebhookSecret() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) std::abort();
  return absl::StrCat(
      "whsec_", absl::Base64Escape(absl::string_view(
                    reinterpret_cast<const char*>(bytes), sizeof(bytes))));
}

absl::StatusOr<std::string> WebhookKey(const std::string& secret) {
  std::string text(absl::StripAsciiWhitespace(secret));
  if (absl::StartsWith(text, "whsec_")) text = text.substr(6);
  std::string key;
  if (!absl::Base64Unescape(text, &key) || key.size() < 24) {
    return absl::InvalidArgumentError(
        "webhook secret: must be whsec_ followed by base64 of at least 24 "
        "bytes");
  }
  return key;
}

std::string SignWebhook(const std::string& key, const std::string& msg_id,
                        int64_t timestamp, const std::string& body) {
  const std::string content = absl::StrCat(msg_id, ".", timestamp, ".", body);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(content.data()), content.size(),
       mac, &len);
  return absl::StrCat("v1,", absl::Base64Escape(absl::string_view(
                                 reinterpret_cast<const char*>(mac), len)));
}

absl::StatusOr<std::string> LoadOrCreateWebhookSecret(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--webhook-secret-file ", path, ": ", std::strerror(errno)));
    }
    const std::string secret = NewWebhookSecret();
    const int fd =
        ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot create webhook secret ", path, ": ", std::strerror(errno)));
    }
    const std::string line = secret + "\n";
    const bool ok = ::write(fd, line.data(), line.size()) ==
                        static_cast<ssize_t>(line.size()) &&
                    ::fsync(fd) == 0;
    ::close(fd);
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot write webhook secret ", path));
    }
    return secret;
  }
  if (st.st_mode & (S_IRWXG | S_IRWXO)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "webhook secret ", path, " can be read by other users; chmod 600 it"));
  }
  std::ifstream in(path);
  std::string secret;
  std::getline(in, secret);
  auto key = WebhookKey(secret);
  if (!key.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", key.status().message()));
  }
  return std::string(absl::StripAsciiWhitespace(secret));
}

}  // namespace lathe::server

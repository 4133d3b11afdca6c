#include "server/identity_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/status.h"

namespace lathe::server {
namespace {

constexpr char kLocalWorkers[] = "local-workers";

// Writes `secret` to `path`, readable by this user alone. With `exclusive`
// an existing file is an error; otherwise it is replaced.
absl::Status WriteSecret(const std::string& path, const std::string& secret,
                         bool exclusive) {
  const std::string tmp = exclusive ? path : path + ".tmp";
  const int flags =
      O_WRONLY | O_CREAT | O_CLOEXEC | (exclusive ? O_EXCL : O_TRUNC);
  const int fd = ::open(tmp.c_str(), flags, 0600);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  }
  ::fchmod(fd, 0600);
  const std::string line = secret + "\n";
  const bool ok = ::write(fd, line.data(), line.size()) ==
                      static_cast<ssize_t>(line.size()) &&
                  ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  if (!exclusive && ::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot rename ", tmp));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteFirstAdminToken(Identities* identities,
                                  const std::string& data_dir) {
  if (identities->HasUsers()) return absl::OkStatus();
  const std::string path = data_dir + "/admin.token";
  if (PathExists(path)) {
    return absl::FailedPreconditionError(absl::StrCat(
        path,
        " exists but the database has no users: move the file away to "
        "let the server create a new admin token"));
  }
  ASSIGN_OR_RETURN(auto user, identities->CreateUser("admin", "admin",
                                                     lathe::v1::ROLE_ADMIN));
  ASSIGN_OR_RETURN(auto token,
                   identities->CreateToken(user.name(), "first admin",
                                           absl::ZeroDuration()));
  RETURN_IF_ERROR(WriteSecret(path, token.secret, /*exclusive=*/true));
  std::fprintf(stderr,
               "lathe-server: new data directory: the admin token (%s) is in "
               "%s; it is not shown again\n",
               token.token.id().c_str(), path.c_str());
  return absl::OkStatus();
}

absl::StatusOr<std::string> WriteLocalWorkerToken(Identities* identities,
                                                  const std::string& data_dir) {
  if (!identities->GetUser(kLocalWorkers).ok()) {
    RETURN_IF_ERROR(
        identities->CreateUser(kLocalWorkers, "", lathe::v1::ROLE_WORKER)
            .status());
  }
  for (const auto& t : identities->ListTokens(kLocalWorkers)) {
    if (t.revoke_time_ms() == 0) {
      RETURN_IF_ERROR(identities->RevokeToken(t.id()).status());
    }
  }
  ASSIGN_OR_RETURN(auto token,
                   identities->CreateToken(kLocalWorkers, "local workers",
                                           absl::ZeroDuration()));
  RETURN_IF_ERROR(MakeDirs(data_dir + "/workers"));
  const std::string path = data_dir + "/workers/local.token";
  RETURN_IF_ERROR(WriteSecret(path, token.secret, /*exclusive=*/false));
  return path;
}

}  // namespace lathe::server

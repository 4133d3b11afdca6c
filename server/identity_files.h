// The credentials the server writes to its data directory: the first
// admin's token, written once when a new data directory starts, and the
// token of the worker agents the server starts itself (--local-workers),
// minted again at every start.
#ifndef LATHE_SERVER_IDENTITY_FILES_H_
#define LATHE_SERVER_IDENTITY_FILES_H_

#include <string>

#include "absl/status/statusor.h"
#include "server/core/identities.h"

namespace lathe::server {

// On a data directory with no users: creates the user "admin" (team
// "admin") and a token for it, written to DATA_DIR/admin.token, mode 0600,
// and says where on stderr. Never writes that file again; fails when it
// already exists although the database has no users (a database removed by
// hand), rather than overwrite a credential. Does nothing otherwise.
absl::Status WriteFirstAdminToken(Identities* identities,
                                  const std::string& data_dir);

// A fresh worker token for the local workers (user "local-workers", role
// worker), in DATA_DIR/workers/local.token (mode 0600). The tokens of
// earlier starts are revoked. Returns the file's path.
absl::StatusOr<std::string> WriteLocalWorkerToken(Identities* identities,
                                                  const std::string& data_dir);

}  // namespace lathe::server

#endif  // LATHE_SERVER_IDENTITY_FILES_H_

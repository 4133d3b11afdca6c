// `lathe users`, `lathe tokens`, `lathe audit`, `lathe whoami` and
// `lathe login`: identities and credentials (AdminService).
#ifndef LATHE_CLIENT_ACCOUNT_COMMANDS_H_
#define LATHE_CLIENT_ACCOUNT_COMMANDS_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/cli_args.h"
#include "client/client.h"

namespace lathe::client {

// The file `lathe login` writes: $XDG_CONFIG_HOME/lathe/token, else
// $HOME/.config/lathe/token; empty when neither variable is set.
std::string LoginTokenFile();

// "30d", "12h", "90m", "45s" (or combinations absl understands, "1h30m").
absl::StatusOr<int64_t> ParseLifetimeSeconds(const std::string& text);

struct AccountIo {
  bool json = false;
  // Prints a failed call's code and message; returns the exit code.
  std::function<int(const absl::Status&)> fail;
};

// Runs one of the commands above on `client`; `login` gets a client that
// carries the token to store. `token` is that token (for login only).
int RunAccountCommand(Client& client, const ParsedArgs& args,
                      const std::string& token, const AccountIo& io);

bool IsAccountCommand(const std::string& command);

}  // namespace lathe::client

#endif  // LATHE_CLIENT_ACCOUNT_COMMANDS_H_

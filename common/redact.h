// Secrets out of text that is shown back: error messages, events, logs.
#ifndef LATHE_COMMON_REDACT_H_
#define LATHE_COMMON_REDACT_H_

#include <string>
#include <string_view>

namespace lathe {

// `text` with the credentials in it replaced by "***": the user-information
// part of URLs ("https://user:secret@host/..." -> "https://***@host/...")
// and the secret part of Lathe API tokens ("lt_<id>_<secret>" ->
// "lt_<id>_***"; the id is not secret and stays).
std::string RedactSecrets(std::string_view text);

}  // namespace lathe

#endif  // LATHE_COMMON_REDACT_H_

// Signing webhook deliveries as the Standard Webhooks convention does, so
// that receivers can use its libraries: the signed content is
// "MSG_ID.TIMESTAMP.BODY", the signature HMAC-SHA256 under the secret's key,
// sent as "v1,BASE64" in the webhook-signature header next to webhook-id
// and webhook-timestamp (seconds since the epoch). The secret is written
// "whsec_" + base64 of its key bytes.
#ifndef LATHE_SERVER_WEBHOOKS_SIGNATURE_H_
#define LATHE_SERVER_WEBHOOKS_SIGNATURE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace lathe::server {

// A new secret: "whsec_" + base64 of 32 random bytes.
std::string NewWebhookSecret();

// The key bytes of a "whsec_..." secret (the prefix is optional).
// INVALID_ARGUMENT when the rest is not base64 of at least 24 bytes.
absl::StatusOr<std::string> WebhookKey(const std::string& secret);

// "v1," + base64(HMAC-SHA256(key, msg_id + "." + timestamp + "." + body)).
std::string SignWebhook(const std::string& key, const std::string& msg_id,
                        int64_t timestamp, const std::string& body);

// Reads the secret from `path`, creating it (mode 0600) with a new secret
// when it does not exist. INVALID_ARGUMENT naming the file when it holds no
// valid secret or can be read by other users.
absl::StatusOr<std::string> LoadOrCreateWebhookSecret(const std::string& path);

}  // namespace lathe::server

#endif  // LATHE_SERVER_WEBHOOKS_SIGNATURE_H_

// The dashboard's files, compiled into the server (embed.cmake).
#ifndef LATHE_SERVER_HTTP_ASSETS_H_
#define LATHE_SERVER_HTTP_ASSETS_H_

#include <cstddef>

namespace lathe::server::http {

struct Asset {
  const char* path;  // "/index.html"
  const unsigned char* data;
  size_t size;
};
// Ends with an entry whose path is null.
extern const Asset kAssets[];

}  // namespace lathe::server::http

#endif  // LATHE_SERVER_HTTP_ASSETS_H_

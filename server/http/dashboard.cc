// The dashboard: static files from the server binary. The page reads
// everything through the JSON API with the token the user typed, which it
// keeps in the tab's sessionStorage.
#include <string>
#include <string_view>

#include "server/http/assets.h"
#include "server/http/routes.h"

namespace lathe::server::http {

namespace {

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.substr(s.size() - suffix.size()) == suffix;
}

const char* TypeOf(std::string_view path) {
  if (EndsWith(path, ".html")) return "text/html; charset=utf-8";
  if (EndsWith(path, ".js")) return "text/javascript; charset=utf-8";
  if (EndsWith(path, ".css")) return "text/css; charset=utf-8";
  if (EndsWith(path, ".svg")) return "image/svg+xml";
  if (EndsWith(path, ".png")) return "image/png";
  return "application/octet-stream";
}

const Asset* Find(std::string_view path) {
  for (const Asset* a = kAssets; a->path != nullptr; ++a) {
    if (path == a->path) return a;
  }
  return nullptr;
}

void Serve(const Asset& asset, httplib::Response& res) {
  res.set_header("Content-Security-Policy",
                 "default-src 'self'; img-src 'self' data: blob:; "
                 "frame-ancestors 'none'; base-uri 'none'; form-action 'self'");
  res.set_header("X-Frame-Options", "DENY");
  res.set_header("Cache-Control", "no-cache");
  res.set_content(reinterpret_cast<const char*>(asset.data), asset.size,
                  TypeOf(asset.path));
}

}  // namespace

void AddDashboard(httplib::Server& server) {
  server.Get("/", [](const httplib::Request&, httplib::Response& res) {
    const Asset* index = Find("/index.html");
    if (index == nullptr) {
      res.status = 404;
      return;
    }
    Serve(*index, res);
  });
  server.Get(R"(/([A-Za-z0-9_.-]+\.(?:html|js|css|svg|png)))",
             [](const httplib::Request& req, httplib::Response& res) {
               const Asset* a = Find(req.path);
               if (a == nullptr) {
                 res.status = 404;
                 return;
               }
               Serve(*a, res);
             });
}

}  // namespace lathe::server::http

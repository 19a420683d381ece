#include "server/metrics/http_router.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"

namespace modelserver {
namespace {

bool NameChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
}

// Whether path segment `s` fits pattern segment `p` (and is captured).
bool Fits(absl::string_view p, absl::string_view s, bool* capture) {
  *capture = false;
  if (p == "{name}") {
    *capture = true;
    if (s.empty() || s.size() > 128) return false;
    for (char c : s) {
      if (!NameChar(c)) return false;
    }
    return true;
  }
  if (p == "{n}") {
    *capture = true;
    if (s.empty() || s.size() > 19) return false;
    for (char c : s) {
      if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
    }
    return true;
  }
  return p == s;
}

}  // namespace

void HttpRouter::Add(std::string method, absl::string_view pattern, Kind kind,
                     HttpHandler handler) {
  Route r;
  r.method = std::move(method);
  r.segments = absl::StrSplit(pattern, '/');
  r.kind = kind;
  r.handler = std::move(handler);
  routes_.push_back(std::move(r));
}

HttpRouter::Match HttpRouter::Find(absl::string_view method, absl::string_view path) const {
  Match m;
  if (path.size() > 4096) return m;
  const std::vector<absl::string_view> segments = absl::StrSplit(path, '/');
  const absl::string_view as = method == "HEAD" ? absl::string_view("GET") : method;
  for (const Route& r : routes_) {
    if (r.segments.size() != segments.size()) continue;
    std::vector<std::string> params;
    bool ok = true;
    for (size_t i = 0; ok && i < segments.size(); ++i) {
      bool capture = false;
      ok = Fits(r.segments[i], segments[i], &capture);
      if (ok && capture) params.emplace_back(segments[i]);
    }
    if (!ok) continue;
    if (r.method == as) {
      m.route = &r;
      m.params = std::move(params);
      return m;
    }
    if (m.allow.find(r.method) == std::string::npos) {
      m.allow += m.allow.empty() ? r.method : ", " + r.method;
      if (r.method == "GET") m.allow += ", HEAD";
    }
  }
  return m;
}

}  // namespace modelserver

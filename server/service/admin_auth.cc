#include "server/service/admin_auth.h"

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/sha256.h"

namespace modelserver {
namespace {
std::string HashOf(const std::string& s) {
  Sha256 sha;
  sha.Update(s);
  return sha.HexDigest();
}
}  // namespace

AdminAuth::AdminAuth(const std::string& token, bool read_only, bool insecure_remote)
    : read_only_(read_only),
      insecure_remote_(insecure_remote),
      token_sha256_(token.empty() ? "" : HashOf(token)) {}

bool AdminAuth::IsLoopbackPeer(absl::string_view peer) {
  if (peer.empty() || absl::StartsWith(peer, "unix:") || absl::StartsWith(peer, "unix-abstract:")) {
    return true;
  }
  if (absl::ConsumePrefix(&peer, "ipv4:")) return absl::StartsWith(peer, "127.");
  if (absl::ConsumePrefix(&peer, "ipv6:[")) {
    const size_t end = peer.find(']');
    if (end == absl::string_view::npos) return false;
    const absl::string_view host = peer.substr(0, end);
    return host == "::1" || absl::StartsWithIgnoreCase(host, "::ffff:127.");
  }
  return false;
}

absl::StatusOr<std::string> AdminAuth::ReadTokenFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read --admin_token_file ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string token(absl::StripAsciiWhitespace(ss.str()));
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--admin_token_file ", path, " is empty"));
  }
  return token;
}

absl::Status AdminAuth::CheckHeader(const std::string* authorization,
                                    absl::string_view peer) const {
  if (read_only_) {
    return absl::PermissionDeniedError("the server is read-only (--read_only): admin RPCs are off");
  }
  if (token_sha256_.empty()) {
    if (insecure_remote_ || IsLoopbackPeer(peer)) return absl::OkStatus();
    return absl::PermissionDeniedError(absl::StrCat(
        "admin RPCs are accepted from this machine only (peer ", peer,
        "); start the server with --admin_token_file to allow them from other hosts with a token"));
  }
  if (authorization == nullptr || !absl::StartsWith(*authorization, "Bearer ")) {
    return absl::UnauthenticatedError("admin RPC needs metadata 'authorization: Bearer <token>'");
  }
  const std::string given =
      HashOf(std::string(absl::StripAsciiWhitespace(absl::string_view(*authorization).substr(7))));
  if (!ConstantTimeEquals(given, token_sha256_)) {
    return absl::PermissionDeniedError("admin token is wrong");
  }
  return absl::OkStatus();
}

bool AdminAuth::ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return diff == 0 && a.size() == b.size();
}

std::string AdminAuth::NewGatewaySecret() {
  std::string bytes(32, '\0');
  std::ifstream urandom("/dev/urandom", std::ios::binary);
  if (!urandom.read(bytes.data(), static_cast<std::streamsize>(bytes.size()))) return "";
  return HashOf(bytes);  // 64 hex digits; empty (never matches) without urandom
}

absl::Status AdminAuth::Check(const grpc::CallbackServerContext& context) const {
  const auto& md = context.client_metadata();
  auto it = md.find("authorization");
  std::string peer = context.peer();
  // The REST gateway's in-process call: it checked its own HTTP peer already.
  if (auto g = md.find(kGatewayHeader);
      g != md.end() && !gateway_secret_.empty() &&
      ConstantTimeEquals(absl::string_view(g->second.data(), g->second.size()), gateway_secret_)) {
    peer.clear();
  }
  if (it == md.end()) return CheckHeader(nullptr, peer);
  const std::string value(it->second.data(), it->second.size());
  return CheckHeader(&value, peer);
}

}  // namespace modelserver

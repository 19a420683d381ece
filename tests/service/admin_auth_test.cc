#include "server/service/admin_auth.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

namespace modelserver {
namespace {

TEST(AdminAuthTest, TokenChecks) {
  AdminAuth auth("s3cret", false);
  const std::string right = "Bearer s3cret", wrong = "Bearer s3cres", longer = "Bearer s3cret1",
                    basic = "Basic s3cret", spaced = "Bearer  s3cret ";
  EXPECT_EQ(auth.CheckHeader(nullptr).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.CheckHeader(&basic).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.CheckHeader(&wrong).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(auth.CheckHeader(&longer).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(auth.CheckHeader(&right).ok());
  EXPECT_TRUE(auth.CheckHeader(&spaced).ok());
}

TEST(AdminAuthTest, ReadOnlyAndOpen) {
  const std::string right = "Bearer s3cret";
  EXPECT_EQ(AdminAuth("s3cret", true).CheckHeader(&right).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(AdminAuth("", true).CheckHeader(nullptr).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(AdminAuth("", false).CheckHeader(nullptr).ok());
}

TEST(AdminAuthTest, LoopbackPeers) {
  for (const char* peer :
       {"ipv4:127.0.0.1:5000", "ipv4:127.8.9.10:1", "ipv6:[::1]:5000", "ipv6:[::ffff:127.0.0.1]:80",
        "ipv6:[::FFFF:127.0.0.1]:80", "unix:/tmp/sock", "unix-abstract:x", ""}) {
    EXPECT_TRUE(AdminAuth::IsLoopbackPeer(peer)) << peer;
  }
  for (const char* peer :
       {"ipv4:10.0.0.1:5000", "ipv4:128.0.0.1:1", "ipv4:1.127.0.0:1", "ipv6:[::2]:5000",
        "ipv6:[fe80::1]:1", "ipv6:[::ffff:10.0.0.1]:1", "ipv6:[::1", "vsock:1", "127.0.0.1"}) {
    EXPECT_FALSE(AdminAuth::IsLoopbackPeer(peer)) << peer;
  }
}

TEST(AdminAuthTest, WithoutATokenOnlyLoopbackPeersAreAdmins) {
  const std::string right = "Bearer s3cret";
  AdminAuth open("", false);
  EXPECT_TRUE(open.CheckHeader(nullptr, "ipv4:127.0.0.1:1").ok());
  absl::Status remote = open.CheckHeader(nullptr, "ipv4:198.18.0.2:4000");
  EXPECT_EQ(remote.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(remote.message()), ::testing::HasSubstr("--admin_token_file"));
  EXPECT_FALSE(open.remote_admin_allowed());
  AdminAuth insecure("", false, /*insecure_remote=*/true);
  EXPECT_TRUE(insecure.CheckHeader(nullptr, "ipv4:198.18.0.2:4000").ok());
  EXPECT_TRUE(insecure.insecure());
  AdminAuth token("s3cret", false);
  EXPECT_TRUE(token.CheckHeader(&right, "ipv4:198.18.0.2:4000").ok());
  EXPECT_EQ(token.CheckHeader(nullptr, "ipv4:127.0.0.1:1").code(),
            absl::StatusCode::kUnauthenticated);  // a token binds loopback callers too
  EXPECT_TRUE(token.remote_admin_allowed());
  EXPECT_FALSE(token.insecure());
}

TEST(AdminAuthTest, TokenFile) {
  const std::string path = ::testing::TempDir() + "/token";
  std::ofstream(path) << "  abc \n";
  EXPECT_EQ(*AdminAuth::ReadTokenFile(path), "abc");
  std::ofstream(path) << "\n";
  EXPECT_EQ(AdminAuth::ReadTokenFile(path).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(AdminAuth::ReadTokenFile(path + "x").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace modelserver

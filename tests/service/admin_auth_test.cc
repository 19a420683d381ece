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

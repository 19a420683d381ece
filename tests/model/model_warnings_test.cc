#include "server/model/model_warnings.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace modelserver {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

int Count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Each distinct warning once, repeats counted (the first summary only after a
// minute), the model's text escaped and cut.
TEST(ModelWarningLogTest, OnceEachEscapedAndCut) {
  ModelWarningLog log("model 'm' version 1");
  ::testing::internal::CaptureStderr();
  for (int i = 0; i < 100; ++i) log.Warn("deprecated");
  log.Warn("line one\nFAKE LOG LINE");
  log.Warn(std::string(5000, 'x'));
  const std::string out = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(log.count(), 102);
  EXPECT_EQ(Count(out, "deprecated"), 1) << out;
  EXPECT_THAT(out, HasSubstr("model 'm' version 1 warned: \"deprecated\""));
  EXPECT_THAT(out, HasSubstr("line one\\nFAKE LOG LINE"));  // one log line, escaped
  EXPECT_THAT(out, Not(HasSubstr("\nFAKE LOG LINE")));
  EXPECT_THAT(out, HasSubstr(std::string(300, 'x') + "...\""));
  EXPECT_THAT(out, Not(HasSubstr(std::string(301, 'x'))));
}

// At most 16 kinds are logged one by one, whatever the model makes up.
TEST(ModelWarningLogTest, KindsAreBounded) {
  ModelWarningLog log("m");
  ::testing::internal::CaptureStderr();
  for (int i = 0; i < 1000; ++i) log.Warn("kind " + std::to_string(i));
  const std::string out = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(log.count(), 1000);
  EXPECT_EQ(Count(out, " warned: "), 16) << out;
  EXPECT_LE(Count(out, " more times "), 1) << out;
}

}  // namespace
}  // namespace modelserver

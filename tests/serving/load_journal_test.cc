#include "server/serving/load_journal.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace modelserver {
namespace {

namespace fs = std::filesystem;

std::string Dir(const char* name) {
  const std::string d = ::testing::TempDir() + "/journal_" + name;
  fs::remove_all(d);
  return d;
}

TEST(LoadJournalTest, ALoadThatNeverEndedIsSkippedAfterARestart) {
  const std::string dir = Dir("crash");
  {
    LoadJournal j(dir);
    ASSERT_TRUE(j.Init().ok());
    j.BeginLoad("m", 3);  // the process dies here
  }
  LoadJournal after(dir);
  ASSERT_TRUE(after.Init().ok());
  EXPECT_EQ(after.SkippedVersion("m"), 3);
  EXPECT_EQ(after.SkippedVersion("m"), 3);  // stays skipped
  EXPECT_EQ(after.SkippedVersion("other"), 0);
  after.ClearSkip("m", 2);  // an older version loading does not clear it
  EXPECT_EQ(after.SkippedVersion("m"), 3);
  after.ClearSkip("m", 3);
  EXPECT_EQ(after.SkippedVersion("m"), 0);
}

// Only a restart turns a load in progress into a skip: a poll that asks while a
// load runs (here, or in a replica sharing the directory) must not.
TEST(LoadJournalTest, ALoadInProgressIsNotSkipped) {
  const std::string dir = Dir("running");
  LoadJournal j(dir);
  ASSERT_TRUE(j.Init().ok());
  j.BeginLoad("m", 2);
  EXPECT_EQ(j.SkippedVersion("m"), 0);
  EXPECT_EQ(LoadJournal(dir).SkippedVersion("m"), 0);  // another replica, already running
  j.EndLoad("m");
  EXPECT_EQ(j.SkippedVersion("m"), 0);
  EXPECT_TRUE(fs::is_empty(dir));
}

TEST(LoadJournalTest, FinishedLoadsLeaveNothing) {
  const std::string dir = Dir("clean");
  LoadJournal j(dir);
  ASSERT_TRUE(j.Init().ok());
  j.BeginLoad("m", 1);
  j.EndLoad("m");
  EXPECT_EQ(LoadJournal(dir).SkippedVersion("m"), 0);
  EXPECT_TRUE(fs::is_empty(dir));
}

TEST(LoadJournalTest, OffWithoutADirectoryAndUnwritableIsAnError) {
  LoadJournal off("");
  EXPECT_TRUE(off.Init().ok());
  off.BeginLoad("m", 1);
  EXPECT_EQ(off.SkippedVersion("m"), 0);
  const std::string file = Dir("file");
  std::ofstream(file) << "x";  // a file where the directory should be
  EXPECT_EQ(LoadJournal(file + "/sub").Init().code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace modelserver

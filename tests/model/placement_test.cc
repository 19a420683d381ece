#include "server/model/placement.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>

#include "server/model/replicated_model.h"
#include "tests/testing/fake_model.h"

namespace modelserver {
namespace {

using ::testing::ElementsAre;

std::vector<std::string> Place(absl::string_view device, std::vector<std::string> devices, int gpus,
                               int workers, int ordinal) {
  absl::StatusOr<std::vector<std::string>> p = PlaceModel(device, devices, gpus, workers, ordinal);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *p : std::vector<std::string>();
}

TEST(PlacementTest, OneDeviceUnlessSeveralGpusAndCuda) {
  EXPECT_THAT(Place("cpu", {}, 0, 2, 0), ElementsAre("cpu"));
  EXPECT_THAT(Place("cpu", {}, 4, 2, 3), ElementsAre("cpu"));
  EXPECT_THAT(Place("cuda", {}, 1, 2, 5), ElementsAre("cuda:0"));
  EXPECT_THAT(Place("cuda:2", {}, 4, 2, 0), ElementsAre("cuda:2"));
  EXPECT_FALSE(PlaceModel("cuda:4", {}, 4, 2, 0).ok());
  EXPECT_FALSE(PlaceModel("cuda", {}, 0, 2, 0).ok());
}

// With 4 GPUs and 2 workers a model takes 2 of them; models go round, so four
// models use every GPU twice.
TEST(PlacementTest, CudaSpreadsWorkersAndModelsRoundRobin) {
  EXPECT_THAT(Place("cuda", {}, 4, 2, 0), ElementsAre("cuda:0", "cuda:1"));
  EXPECT_THAT(Place("cuda", {}, 4, 2, 1), ElementsAre("cuda:1", "cuda:2"));
  EXPECT_THAT(Place("cuda", {}, 4, 2, 3), ElementsAre("cuda:3", "cuda:0"));
  EXPECT_THAT(Place("cuda", {}, 2, 8, 0), ElementsAre("cuda:0", "cuda:1"));  // at most every GPU
  EXPECT_THAT(Place("cuda", {}, 8, 1, 6), ElementsAre("cuda:6"));
}

TEST(PlacementTest, ExplicitDevicesWinAndAreChecked) {
  EXPECT_THAT(Place("cuda", {"cuda:3", "cuda:1"}, 4, 2, 0), ElementsAre("cuda:3", "cuda:1"));
  EXPECT_THAT(Place("cpu", {"cpu"}, 0, 2, 0), ElementsAre("cpu"));
  EXPECT_FALSE(PlaceModel("cuda", {"cuda:9"}, 4, 2, 0).ok());
  EXPECT_FALSE(PlaceModel("cuda", {"cuda:1", "cuda:1"}, 4, 2, 0).ok());
  EXPECT_FALSE(PlaceModel("cuda", {"gpu0"}, 4, 2, 0).ok());
}

TEST(PlacementTest, ModelDevicesFlagContinuesListsSplitAtCommas) {
  auto m = ParseModelDevices({"vgg16=cuda:0", "cuda:1", "tiny=cuda:2"});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_THAT((*m)["vgg16"], ElementsAre("cuda:0", "cuda:1"));
  EXPECT_THAT((*m)["tiny"], ElementsAre("cuda:2"));
  EXPECT_FALSE(ParseModelDevices({"cuda:0"}).ok());  // no model yet
  EXPECT_FALSE(ParseModelDevices({"=cuda:0"}).ok());
}

// Forward passes go to the copy with the fewest running: two passes at once use
// both copies; the outputs are the copies' own.
TEST(ReplicatedModelTest, ConcurrentPassesSpreadOverTheCopies) {
  auto a = std::make_shared<testing::FakeModel>();
  auto b = std::make_shared<testing::FakeModel>();
  absl::Notification gate;
  a->set_gate(&gate);
  ReplicatedModel m({a, b});
  EXPECT_EQ(m.info().device, "cpu,cpu");
  HostTensor x;
  x.dtype = DType::kFloat32;
  x.shape = {1, 1};
  const float v = 3;
  x.data.assign(reinterpret_cast<const char*>(&v), 4);
  absl::StatusOr<HostTensor> first;
  std::thread t([&] { first = m.Forward(x); });  // goes to a, held at its gate
  for (int i = 0; i < 3000 && a->entered() == 0; ++i) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_EQ(a->entered(), 1);
  absl::StatusOr<HostTensor> second = m.Forward(x);  // a is busy: b
  gate.Notify();
  t.join();
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(b->entered(), 1);
  EXPECT_THAT(m.forwards(), ElementsAre(1, 1));
  absl::StatusOr<HostTensor> third = m.Forward(x);  // both idle: the first copy
  ASSERT_TRUE(third.ok());
  EXPECT_THAT(m.forwards(), ElementsAre(2, 1));
}

}  // namespace
}  // namespace modelserver

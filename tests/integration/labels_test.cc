// Integration: class labels (labels.txt beside the checkpoint, line i = class i)
// come back in Predict's top-k classes -- from a hand-copied version, from an
// upload's labels, and after SaveModel, which copies them.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "client/model_client.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_store.h"

namespace modelserver {
namespace {

namespace v1 = modelserving::v1;
using testing::FixturesDir;

const char* const kLabels[] = {"tabby cat",  "golden retriever", "espresso", "rocket",  "astronaut",
                               "coffee mug", "camera",           "logo",     "chelsea", "ten"};

std::string LabelsText() {
  std::string text;
  for (const char* l : kLabels) absl::StrAppend(&text, l, "\n");
  return text;
}

// Every returned class carries line `index` of the labels.
void ExpectLabelled(const ModelClient& client, const std::string& model) {
  v1::PredictResponse r;
  grpc::Status s =
      client.Predict(MakePredictRequest(model, testing::FixtureNpy("tiny", "input.npy"), 3), &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(r.top_k_size(), 4);
  for (const auto& sample : r.top_k()) {
    ASSERT_EQ(sample.classes_size(), 3);
    for (const v1::Class& c : sample.classes()) {
      EXPECT_EQ(c.label(), kLabels[c.index()]) << model << " class " << c.index();
    }
  }
}

TEST(LabelsTest, LabelsComeBackFromCopiedUploadedAndSavedVersions) {
  const std::string store = testing::NewTempDir("labels_store");
  const std::string weights = FixturesDir() + "/tiny/model_weights.pth";
  const std::string arch = testing::ReadFile(FixturesDir() + "/tiny/arch.txt");
  testing::PutVersion(store, "copied", 1, weights, "model_weights.pth", "");
  std::ofstream(store + "/copied/1/labels.txt") << LabelsText();
  testing::PutVersion(store, "plain", 1, weights, "model_weights.pth", "");
  auto serving =
      testing::StartServing({"--store=" + store, "--model=copied=" + arch, "--model=plain=" + arch},
                            store + "/server.log", {"copied", "plain"});
  ASSERT_TRUE(serving.ok()) << serving.status();
  const ModelClient& client = *serving->client;
  ExpectLabelled(client, "copied");
  // Without labels.txt: indices only.
  v1::PredictResponse r;
  ASSERT_TRUE(
      client.Predict(MakePredictRequest("plain", testing::FixtureNpy("tiny", "input.npy"), 2), &r)
          .ok());
  EXPECT_EQ(r.top_k(0).classes(0).label(), "");
  // Uploaded with the labels in the header.
  v1::UploadHeader h;
  h.set_model_name("uploaded");
  h.set_format(v1::STATE_DICT);
  h.set_architecture(arch);
  h.set_labels(LabelsText());
  v1::UploadCheckpointResponse ur;
  ASSERT_TRUE(client.Upload(weights, h, &ur).ok());
  EXPECT_EQ(testing::ReadFile(store + "/uploaded/1/labels.txt"), LabelsText());
  v1::LoadModelResponse lr;
  ASSERT_TRUE(client.LoadModel("uploaded", 0, &lr).ok());
  ExpectLabelled(client, "uploaded");
  // Over 4 MiB of labels: refused, nothing written.
  h.set_model_name("too_many");
  h.set_labels(std::string((4 << 20) + 1, 'x'));
  grpc::Status s = client.Upload(weights, h, &ur);
  EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), ::testing::HasSubstr("over 4 MiB"));
  EXPECT_FALSE(std::filesystem::exists(store + "/too_many"));
  // SaveModel copies them with the weights.
  v1::SaveModelRequest sr;
  sr.set_model_name("uploaded");
  sr.set_format(v1::STATE_DICT);
  sr.set_target_model_name("saved");
  v1::SaveModelResponse sresp;
  ASSERT_TRUE(client.SaveModel(sr, &sresp).ok());
  EXPECT_EQ(testing::ReadFile(store + "/saved/1/labels.txt"), LabelsText());
  ASSERT_TRUE(client.LoadModel("saved", 0, &lr).ok());
  ExpectLabelled(client, "saved");
}

}  // namespace
}  // namespace modelserver

#include "server/checkpoint/exported_program.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "server/checkpoint/aoti_package.h"
#include "tests/testing/server_process.h"

namespace modelserver {
namespace exported {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;

std::string ExportDir(const std::string& rel) {
  return modelserver::testing::FixturesDir() + "/export/" + rel;
}

absl::StatusOr<ExportedProgram> Read(const std::string& path, const ReadLimits& limits = {}) {
  auto zip = ZipReader::Open(path);
  if (!zip.ok()) return zip.status();
  return ReadExportedProgram(*std::move(zip), path, limits);
}

const char* KindName(InputSpec::Kind k) {
  switch (k) {
    case InputSpec::Kind::kUserInput:
      return "user_input";
    case InputSpec::Kind::kParameter:
      return "parameter";
    case InputSpec::Kind::kBuffer:
      return "buffer";
    case InputSpec::Kind::kTensorConstant:
      return "tensor_constant";
    default:
      return "other";
  }
}

// The first `n` elements (in row-major order of the view) of a float32 or int64
// tensor, read from its record through its sizes, strides and offset.
std::vector<double> FirstValues(const TensorData& t, size_t n) {
  std::string bytes(t.record->size, '\0');
  EXPECT_TRUE(t.zip->ReadInto(*t.record, bytes.data(), true).ok());
  std::vector<double> out;
  int64_t numel = 1;
  for (int64_t s : t.sizes) numel *= s;
  for (int64_t flat = 0; flat < numel && out.size() < n; ++flat) {
    int64_t index = t.storage_offset, rest = flat;
    for (size_t d = t.sizes.size(); d-- > 0;) {
      index += (rest % t.sizes[d]) * t.strides[d];
      rest /= t.sizes[d];
    }
    if (t.dtype == pickle::StorageType::kFloat) {
      float f;
      std::memcpy(&f, bytes.data() + index * 4, 4);
      out.push_back(f);
    } else {
      int64_t v;
      std::memcpy(&v, bytes.data() + index * 8, 8);
      out.push_back(static_cast<double>(v));
    }
  }
  return out;
}

// What the reader finds in `dir`/model.pt2 against what Python found (expected.json).
void CheckAgainstPython(const std::string& dir, ExportedProgram::Layout layout) {
  std::ifstream f(ExportDir(dir + "/expected.json"));
  ASSERT_TRUE(f.good()) << "no expected.json in " << dir;
  const Json want = Json::parse(f);
  auto zip = ZipReader::Open(ExportDir(dir + "/model.pt2"));
  ASSERT_TRUE(zip.ok()) << zip.status();
  EXPECT_EQ(ClassifyPt2(**zip), Pt2Kind::kExportedProgram);
  auto p = ReadExportedProgram(*std::move(zip), dir, {});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->layout, layout);
  EXPECT_EQ(p->schema_major, 8);
  std::vector<std::string> targets;
  for (const Node& n : p->graph.nodes) targets.push_back(n.target);
  EXPECT_EQ(targets, want["nodes"].get<std::vector<std::string>>());
  ASSERT_EQ(p->input_specs.size(), want["inputs"].size());
  for (size_t i = 0; i < p->input_specs.size(); ++i) {
    EXPECT_EQ(KindName(p->input_specs[i].kind), want["inputs"][i][0].get<std::string>()) << i;
    EXPECT_EQ(p->input_specs[i].target, want["inputs"][i][1].get<std::string>()) << i;
  }
  ASSERT_EQ(p->output_specs.size(), 1u);
  EXPECT_EQ(p->output_specs[0].kind, OutputSpec::Kind::kUserOutput);
  for (const auto& [symbol, range] : want["ranges"].items()) {
    auto it = p->range_constraints.find(symbol);
    ASSERT_NE(it, p->range_constraints.end()) << symbol;
    EXPECT_EQ(it->second.min, range[0].get<int64_t>());
    EXPECT_EQ(it->second.max, range[1].get<int64_t>());
  }
  EXPECT_EQ(InputDimSymbol(*p, 0, 0), want["ranges"].begin().key());
  EXPECT_EQ(InputDimSymbol(*p, 0, 1), "");  // a constant dimension
  EXPECT_EQ(p->state_dict.size(), want["weights"].size());
  for (const auto& [fqn, w] : want["weights"].items()) {
    auto it = p->state_dict.find(fqn);
    ASSERT_NE(it, p->state_dict.end()) << fqn;
    EXPECT_EQ(it->second.sizes, w["shape"].get<std::vector<int64_t>>()) << fqn;
    const std::vector<double> first = w["first"].get<std::vector<double>>();
    EXPECT_EQ(FirstValues(it->second, first.size()), first) << fqn;
  }
  // The first node as Python wrote it: conv2d(input=x, weight=..., bias=...).
  const Node& conv = p->graph.nodes[0];
  ASSERT_GE(conv.inputs.size(), 3u);
  EXPECT_EQ(conv.inputs[0].name, "input");
  EXPECT_EQ(conv.inputs[0].arg.kind, ArgKind::kTensor);
  EXPECT_EQ(conv.inputs[0].arg.names, std::vector<std::string>{"x"});
}

TEST(ExportedProgramTest, ReadsTorch26LayoutBuiltByHand) {
  CheckAgainstPython("handmade_26", ExportedProgram::Layout::kTorch26);
}

TEST(ExportedProgramTest, ReadsPt2ArchiveLayoutBuiltByHand) {
  CheckAgainstPython("handmade_pt2", ExportedProgram::Layout::kPt2Archive);
}

TEST(ExportedProgramTest, ReadsWhatTorchExportSaves) {
  std::ifstream why(ExportDir("NO_TORCH_EXPORT"));
  if (why.good()) {
    std::string line;
    std::getline(why, line);
    GTEST_SKIP() << "the fixtures' Python cannot export (" << line
                 << "); the Debian 13 build runs this test";
  }
  CheckAgainstPython("real_cnn", ExportedProgram::Layout::kTorch26);
}

struct Hostile {
  const char* file;
  absl::StatusCode code;
  const char* message;
};

TEST(ExportedProgramTest, RefusesHostilePrograms) {
  const Hostile cases[] = {
      {"future_schema", absl::StatusCode::kFailedPrecondition, "schema version 9.0"},
      {"undefined_value", absl::StatusCode::kFailedPrecondition,
       "uses 'nope', which no graph input or earlier node defines"},
      {"use_before_definition", absl::StatusCode::kFailedPrecondition,
       "argument 'input' uses 'conv2d', which no graph input or earlier node defines"},
      {"defined_twice", absl::StatusCode::kFailedPrecondition, "defines 'conv2d' a second time"},
      {"missing_weight", absl::StatusCode::kFailedPrecondition,
       "parameter 'fc.bias' is not in its weights"},
      {"wrong_shape", absl::StatusCode::kFailedPrecondition,
       "'fc.weight' is [3, 4] in the weights but [2, 4] in the graph"},
      {"custom_object_constant", absl::StatusCode::kFailedPrecondition, "system"},
      {"overflowing_shape", absl::StatusCode::kFailedPrecondition,
       "tensor 'fc.weight' of shape [1099511627776, 1099511627776] overflows"},
      {"view_past_storage", absl::StatusCode::kFailedPrecondition,
       "tensor 'fc.weight' of shape [100, 100] reaches element 9999 of a storage of 8"},
      {"expanded_view", absl::StatusCode::kFailedPrecondition,
       "tensor 'fc.bias' of shape [34000, 34000] has 1156000000 elements, a view of a storage "
       "of 2"},
      {"huge_graph", absl::StatusCode::kResourceExhausted,
       "the graph has more than 50000 nodes; at most 50000 are served"},
      {"aoti_like", absl::StatusCode::kFailedPrecondition, "AOTInductor package"},
  };
  for (const Hostile& h : cases) {
    auto p = Read(ExportDir(std::string("hostile/") + h.file + ".pt2"));
    ASSERT_FALSE(p.ok()) << h.file;
    EXPECT_EQ(p.status().code(), h.code) << h.file << ": " << p.status();
    EXPECT_THAT(std::string(p.status().message()), HasSubstr(h.message)) << h.file;
  }
  auto aoti = ZipReader::Open(ExportDir("hostile/aoti_like.pt2"));
  ASSERT_TRUE(aoti.ok());
  EXPECT_EQ(ClassifyPt2(**aoti), Pt2Kind::kAotiPackage);
}

TEST(ExportedProgramTest, TheReaderIsNotTheOperatorAllowlist) {
  // aten.from_file is well-formed data: the reader describes it, and the
  // interpreter's allowlist is what refuses it.
  auto p = Read(ExportDir("hostile/off_allowlist.pt2"));
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->graph.nodes.size(), 6u);
  EXPECT_EQ(p->graph.nodes[3].target, "torch.ops.aten.from_file.default");
  EXPECT_EQ(p->graph.nodes[3].inputs[0].arg.kind, ArgKind::kString);
  EXPECT_EQ(p->graph.nodes[3].inputs[0].arg.s, "/etc/passwd");
}

TEST(ExportedProgramTest, StateDictFitsTheProgramAsLoadStateDictStrictWould) {
  auto p = Read(ExportDir("handmade_26/model.pt2"));
  ASSERT_TRUE(p.ok()) << p.status();
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [k, t] : p->state_dict) shapes[k] = t.sizes;
  EXPECT_TRUE(CheckStateDictFitsProgram(*p, shapes, "weights").ok());
  shapes.erase("bn.running_var");
  shapes["fc.weight"] = {3, 4};
  shapes["extra.weight"] = {1};
  absl::Status s = CheckStateDictFitsProgram(*p, shapes, "weights");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("weights does not fit the exported program (load_state_dict(strict=True) "
                        "would fail): missing key(s) in the state dict: \"bn.running_var\"; "
                        "unexpected key(s) in the state dict: \"extra.weight\"; size mismatch "
                        "for fc.weight: the checkpoint has [3, 4], the program [2, 4]"));
}

TEST(ExportedProgramTest, TellsOtherFilesApart) {
  auto zip = ZipReader::Open(modelserver::testing::FixturesDir() + "/tiny/model_weights.pth");
  ASSERT_TRUE(zip.ok());
  EXPECT_EQ(ClassifyPt2(**zip), Pt2Kind::kNotPt2);
  auto p = ReadExportedProgram(*std::move(zip), "weights", {});
  EXPECT_EQ(p.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("not a torch.export archive"));
}

// AOTInductor packages: told apart from programs, their structure read torch-free
// (server/checkpoint/aoti_package.h) before any library is opened.
TEST(AotiPackageTest, FindsTheLibraryAndRefusesOddPackages) {
  for (const char* good :
       {"package_26.pt2", "package_root.pt2", "two_models_one_named_model.pt2"}) {
    auto zip = ZipReader::Open(ExportDir(std::string("aoti/") + good));
    ASSERT_TRUE(zip.ok()) << good << ": " << zip.status();
    EXPECT_EQ(ClassifyPt2(**zip), Pt2Kind::kAotiPackage) << good;
    auto p = ReadAotiPackage(**zip);
    ASSERT_TRUE(p.ok()) << good << ": " << p.status();
    EXPECT_EQ(p->model, "model") << good;
    EXPECT_EQ(p->device, "cpu") << good;
    ASSERT_NE(p->library, nullptr);
    EXPECT_THAT(p->library->name, ::testing::EndsWith("data/aotinductor/model/abc.so")) << good;
    EXPECT_EQ(p->library->size, 15u * 64u) << good;  // "\x7fELF not really" x 64
    // Not a program: the exported-program reader says which format it is.
    auto program = ReadExportedProgram(*std::move(zip), good, {});
    EXPECT_THAT(std::string(program.status().message()), HasSubstr("AOTI_PACKAGE")) << good;
  }
  const struct {
    const char* file;
    absl::StatusCode code;
    const char* message;
  } bad[] = {
      {"two_models.pt2", absl::StatusCode::kFailedPrecondition, "several models (a, b)"},
      {"two_libraries.pt2", absl::StatusCode::kFailedPrecondition, "has two libraries"},
      {"cpp_only.pt2", absl::StatusCode::kFailedPrecondition, "no compiled library"},
      {"bad_metadata.pt2", absl::StatusCode::kDataLoss, "is not a JSON object"},
      {"device_not_string.pt2", absl::StatusCode::kDataLoss, "AOTI_DEVICE_KEY is not a string"},
  };
  for (const auto& b : bad) {
    auto zip = ZipReader::Open(ExportDir(std::string("aoti/") + b.file));
    ASSERT_TRUE(zip.ok()) << b.file;
    auto p = ReadAotiPackage(**zip);
    EXPECT_EQ(p.status().code(), b.code) << b.file << ": " << p.status();
    EXPECT_THAT(std::string(p.status().message()), HasSubstr(b.message)) << b.file;
  }
  auto cuda = ZipReader::Open(ExportDir("aoti/cuda.pt2"));
  ASSERT_TRUE(cuda.ok());
  auto p = ReadAotiPackage(**cuda);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->device, "cuda");
  AotiPackageLimits small;
  small.max_library_bytes = 100;
  auto big = ZipReader::Open(ExportDir("aoti/package_26.pt2"));
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(ReadAotiPackage(**big, small).status().code(), absl::StatusCode::kResourceExhausted);
  // A program is no package.
  auto program = ZipReader::Open(ExportDir("handmade_26/model.pt2"));
  ASSERT_TRUE(program.ok());
  EXPECT_EQ(ReadAotiPackage(**program).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(ExportedProgramTest, TruncatedArchivesAreDataLoss) {
  std::string bytes = modelserver::testing::ReadFile(ExportDir("handmade_26/model.pt2"));
  for (size_t keep : {bytes.size() / 2, bytes.size() - 30, size_t{100}}) {
    auto zip = ZipReader::FromBuffer(bytes.substr(0, keep));
    if (!zip.ok()) {
      EXPECT_EQ(zip.status().code(), absl::StatusCode::kDataLoss);
      continue;
    }
    EXPECT_FALSE(ReadExportedProgram(*std::move(zip), "cut", {}).ok()) << keep;
  }
}

TEST(ExportedProgramTest, JsonBudgets) {
  ExportedProgram p;
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  absl::Status s = ParseProgramJson(deep, "deep", {}, &p);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("nests deeper than 64"));

  ReadLimits small;
  small.max_json_values = 1000;
  std::string many = "[";
  for (int i = 0; i < 5000; ++i) many += "0,";
  many += "0]";
  s = ParseProgramJson(many, "many", small, &p);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("more than 1000 values"));

  s = ParseProgramJson("{\"schema_version\": ", "cut", {}, &p);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;

  // A union with two fields, where the graph's first input is.
  Json prog = {
      {"schema_version", {{"major", 8}, {"minor", 2}}},
      {"graph_module",
       {{"graph",
         {{"inputs", {{{"as_tensor", {{"name", "x"}}}, {"as_int", 1}}}},
          {"outputs", Json::array()},
          {"nodes", Json::array()}}},
        {"signature", {{"input_specs", Json::array()}, {"output_specs", Json::array()}}}}}};
  s = ParseProgramJson(prog.dump(), "two", {}, &p);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("graph_module.graph.inputs[0]: not a union"));
}

}  // namespace
}  // namespace exported
}  // namespace modelserver

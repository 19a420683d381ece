// Unit tests of server/image/: the preprocessing description (parse, defaults,
// torchvision's size rule), the transform on images whose result follows from
// the definitions (constant colours, padding), EXIF orientations against their
// definitions, and the decoders' refusals. The decoders' parity with PIL and
// torchvision on real photos is image_test (Python, against the real server).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <atomic>
#include <string>
#include <vector>

#include "server/image/image_decode.h"
#include "server/image/preprocess.h"
#include "server/util/worker_pool.h"

namespace modelserver {
namespace {

using ::testing::HasSubstr;

TEST(PreprocessTest, DefaultsAreTorchvisionsImageNetRecipe) {
  const ImagePreprocess p;
  EXPECT_EQ(p.resize, std::vector<int64_t>({256}));
  EXPECT_EQ(p.crop, std::vector<int64_t>({224}));
  EXPECT_EQ(p.OutputShape(), std::vector<int64_t>({3, 224, 224}));
  EXPECT_FLOAT_EQ(p.mean[0], 0.485f);
  EXPECT_FLOAT_EQ(p.std[2], 0.225f);
}

TEST(PreprocessTest, ParsesAndRoundTrips) {
  auto p = ParsePreprocess(
      R"({"resize": [40, 50], "crop": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.5, 1],
          "interpolation": "bicubic"})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->OutputShape(), std::vector<int64_t>({3, 32, 32}));
  EXPECT_EQ(p->interpolation, ImagePreprocess::Interpolation::kBicubic);
  auto again = ParsePreprocess(PreprocessJson(*p));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->resize, p->resize);
  EXPECT_EQ(again->crop, p->crop);
  EXPECT_EQ(again->std, p->std);
  EXPECT_EQ(again->interpolation, p->interpolation);
  // Absent keys keep the defaults.
  auto partial = ParsePreprocess(R"({"crop": 200})");
  ASSERT_TRUE(partial.ok());
  EXPECT_EQ(partial->resize, std::vector<int64_t>({256}));
  EXPECT_EQ(partial->OutputShape(), std::vector<int64_t>({3, 200, 200}));
  // No crop: resize must fix the size.
  auto exact = ParsePreprocess(R"({"resize": [20, 30], "crop": null})");
  ASSERT_TRUE(exact.ok()) << exact.status();
  EXPECT_EQ(exact->OutputShape(), std::vector<int64_t>({3, 20, 30}));
}

TEST(PreprocessTest, BadDescriptionsNameTheKey) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"[]", "JSON object"},
      {"{", "JSON object"},
      {R"({"resize": 0})", "\"resize\" 0 is outside"},
      {R"({"resize": "big"})", "\"resize\" must be"},
      {R"({"crop": [1, 2, 3]})", "\"crop\" must be"},
      {R"({"mean": [0.5, 0.5]})", "\"mean\" must be three numbers"},
      {R"({"std": [0.5, 0, 0.5]})", "\"std\" has 0"},
      {R"({"interpolation": "nearest"})", "\"interpolation\""},
      {R"({"scale": 2})", "unknown key \"scale\""},
      {R"({"crop": null})", "fixed output size"},
      {std::string(5000, '['), "over the limit of 4096"},
  };
  for (const auto& [json, words] : bad) {
    auto p = ParsePreprocess(json);
    ASSERT_FALSE(p.ok()) << json;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << json;
    EXPECT_THAT(std::string(p.status().message()), HasSubstr(words)) << json;
  }
}

TEST(PreprocessTest, ResizeFollowsTorchvisionsSizeRule) {
  const ImagePreprocess p;  // Resize(256)
  // The longer side is int(256 * long / short), truncated: 256 * 500 / 375 = 341.33.
  EXPECT_EQ(ResizedSize(p, 375, 500), (std::array<int64_t, 2>{256, 341}));
  EXPECT_EQ(ResizedSize(p, 500, 375), (std::array<int64_t, 2>{341, 256}));
  // 256 * 451 / 300 = 384.85: truncated, not rounded.
  EXPECT_EQ(ResizedSize(p, 300, 451), (std::array<int64_t, 2>{256, 384}));
  EXPECT_EQ(ResizedSize(p, 256, 300), (std::array<int64_t, 2>{256, 300}));  // short side fits
  EXPECT_EQ(ResizedSize(p, 100, 100), (std::array<int64_t, 2>{256, 256}));
  ImagePreprocess exact;
  exact.resize = {20, 30};
  EXPECT_EQ(ResizedSize(exact, 375, 500), (std::array<int64_t, 2>{20, 30}));
}

RgbImage Solid(int64_t w, int64_t h, uint8_t r, uint8_t g, uint8_t b) {
  RgbImage im;
  im.width = w;
  im.height = h;
  for (int64_t i = 0; i < w * h; ++i) im.pixels.insert(im.pixels.end(), {r, g, b});
  return im;
}

TEST(TransformTest, AConstantImageNormalisesToConstants) {
  const ImagePreprocess p;
  std::vector<float> out(3 * 224 * 224);
  ASSERT_TRUE(TransformImage(Solid(500, 375, 200, 100, 0), p, out.data()).ok());
  const float want[3] = {(200 / 255.0f - p.mean[0]) / p.std[0],
                         (100 / 255.0f - p.mean[1]) / p.std[1], (0 - p.mean[2]) / p.std[2]};
  for (int c = 0; c < 3; ++c) {
    for (int i = 0; i < 224 * 224; ++i) {
      ASSERT_NEAR(out[static_cast<size_t>(c * 224 * 224 + i)], want[c], 1e-5)
          << "channel " << c << " element " << i;
    }
  }
}

TEST(TransformTest, ASmallerImageIsPaddedWithZerosAsCenterCropDoes) {
  ImagePreprocess p;
  p.resize.clear();  // no resize: a 2x2 image cropped to 4x4 is padded 1 on each side
  p.crop = {4};
  p.mean = {0, 0, 0};
  p.std = {1, 1, 1};
  std::vector<float> out(3 * 4 * 4, -1);
  ASSERT_TRUE(TransformImage(Solid(2, 2, 255, 255, 255), p, out.data()).ok());
  for (int y = 0; y < 4; ++y) {
    for (int x = 0; x < 4; ++x) {
      const bool inside = y >= 1 && y <= 2 && x >= 1 && x <= 2;
      EXPECT_FLOAT_EQ(out[static_cast<size_t>(y * 4 + x)], inside ? 1.0f : 0.0f) << y << "," << x;
    }
  }
}

// A 3x2 image whose pixel (x, y) has red = 10 * y + x.
RgbImage Numbered() {
  RgbImage im;
  im.width = 3;
  im.height = 2;
  for (int y = 0; y < 2; ++y) {
    for (int x = 0; x < 3; ++x) im.pixels.insert(im.pixels.end(), {uint8_t(10 * y + x), 0, 0});
  }
  return im;
}

uint8_t RedAt(const RgbImage& im, int64_t x, int64_t y) {
  return im.pixels[static_cast<size_t>((y * im.width + x) * 3)];
}

TEST(OrientationTest, EachOrientationIsItsDefinition) {
  // EXIF: where the stored image's first row and column go. Source of output (x, y):
  struct Case {
    int orientation;
    int64_t w, h;
    std::function<std::pair<int64_t, int64_t>(int64_t, int64_t)> source;
  };
  const int64_t W = 3, H = 2;
  const std::vector<Case> cases = {
      {1, W, H, [](int64_t x, int64_t y) { return std::make_pair(x, y); }},
      {2, W, H, [&](int64_t x, int64_t y) { return std::make_pair(W - 1 - x, y); }},  // mirror
      {3, W, H, [&](int64_t x, int64_t y) { return std::make_pair(W - 1 - x, H - 1 - y); }},
      {4, W, H, [&](int64_t x, int64_t y) { return std::make_pair(x, H - 1 - y); }},  // flip
      {5, H, W, [](int64_t x, int64_t y) { return std::make_pair(y, x); }},           // transpose
      {6, H, W, [&](int64_t x, int64_t y) { return std::make_pair(y, H - 1 - x); }},  // 90 cw
      {7, H, W, [&](int64_t x, int64_t y) { return std::make_pair(W - 1 - y, H - 1 - x); }},
      {8, H, W, [&](int64_t x, int64_t y) { return std::make_pair(W - 1 - y, x); }},  // 90 ccw
  };
  const RgbImage in = Numbered();
  for (const Case& c : cases) {
    const RgbImage out = ApplyOrientation(in, c.orientation);
    ASSERT_EQ(out.width, c.w) << c.orientation;
    ASSERT_EQ(out.height, c.h) << c.orientation;
    for (int64_t y = 0; y < out.height; ++y) {
      for (int64_t x = 0; x < out.width; ++x) {
        const auto [sx, sy] = c.source(x, y);
        EXPECT_EQ(RedAt(out, x, y), RedAt(in, sx, sy))
            << "orientation " << c.orientation << " at " << x << "," << y;
      }
    }
  }
}

std::string Chunk(const std::string& kind, const std::string& body) {
  auto be32 = [](uint32_t v) {
    return std::string{char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
  };
  const std::string kb = kind + body;
  return be32(static_cast<uint32_t>(body.size())) + kb +
         be32(static_cast<uint32_t>(
             crc32(0, reinterpret_cast<const Bytef*>(kb.data()), static_cast<uInt>(kb.size()))));
}

TEST(DecodeTest, RefusalsNameTheProblem) {
  const DecodeLimits limits;
  auto empty = DecodeImage("", limits);
  EXPECT_THAT(std::string(empty.status().message()), HasSubstr("empty"));
  auto text = DecodeImage("hello, world", limits);
  EXPECT_THAT(std::string(text.status().message()), HasSubstr("not a JPEG, PNG or WebP"));
  auto jpeg = DecodeImage(std::string("\xFF\xD8\xFF\xE0", 4), limits);
  EXPECT_THAT(std::string(jpeg.status().message()), HasSubstr("JPEG: "));
  // A valid PNG header claiming 30000 x 30000: refused from the header.
  const std::string ihdr{0, 0, 0x75, 0x30, 0, 0, 0x75, 0x30, 8, 2, 0, 0, 0};
  const std::string png =
      std::string("\x89PNG\r\n\x1a\n", 8) + Chunk("IHDR", ihdr) + Chunk("IEND", "");
  auto huge = DecodeImage(png, limits);
  EXPECT_THAT(std::string(huge.status().message()),
              HasSubstr("30000x30000 pixels is over the limit of 40000000"));
  for (const auto& r : {empty, text, jpeg, huge}) {
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(WorkerPoolTest, RunsTasksAndRefusesPastItsQueue) {
  std::atomic<int> ran{0};
  {
    WorkerPool pool(2, 4);
    std::vector<std::function<void()>> five(5, [&] { ++ran; });
    EXPECT_FALSE(pool.PostAll(five));  // all or none
    std::vector<std::function<void()>> three(3, [&] { ++ran; });
    EXPECT_TRUE(pool.PostAll(three));
    pool.Shutdown();  // runs what is queued
    EXPECT_FALSE(pool.Post([&] { ++ran; }));
  }
  EXPECT_EQ(ran.load(), 3);
}

}  // namespace
}  // namespace modelserver

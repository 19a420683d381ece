#include "server/metrics/http_router.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace modelserver {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

HttpHandler Named(std::string* hit, const std::string& name) {
  return [hit, name](const HttpRequest&, HttpResponse*) { *hit = name; };
}

TEST(HttpRouterTest, CapturesNamesAndNumbersOnly) {
  std::string hit;
  HttpRouter r;
  r.Add("POST", "/v2/models/{name}/infer", HttpRouter::kBlocking, Named(&hit, "infer"));
  r.Add("POST", "/v2/models/{name}/versions/{n}/infer", HttpRouter::kBlocking,
        Named(&hit, "infer_v"));
  r.Add("GET", "/v2/models/{name}", HttpRouter::kQuick, Named(&hit, "meta"));

  HttpRouter::Match m = r.Find("POST", "/v2/models/vgg16.a-b_c/versions/12/infer");
  ASSERT_NE(m.route, nullptr);
  EXPECT_THAT(m.params, ElementsAre("vgg16.a-b_c", "12"));
  m.route->handler(HttpRequest(), nullptr);
  EXPECT_EQ(hit, "infer_v");
  EXPECT_EQ(r.Find("POST", "/v2/models/m/infer").route->kind, HttpRouter::kBlocking);

  // Not the alphabet, empty, too long, a non-number version, extra segments.
  for (const char* path : {"/v2/models/a%2Fb/infer", "/v2/models//infer",
                           "/v2/models/m/versions/x/infer", "/v2/models/m/versions/-1/infer",
                           "/v2/models/m/infer/", "/v2/models/m/infer/x", "/v2/models/m?x/infer"}) {
    EXPECT_EQ(r.Find("POST", path).route, nullptr) << path;
  }
  EXPECT_EQ(r.Find("POST", "/v2/models/" + std::string(129, 'a') + "/infer").route, nullptr);
  EXPECT_NE(r.Find("POST", "/v2/models/" + std::string(128, 'a') + "/infer").route, nullptr);
  EXPECT_EQ(r.Find("POST", "/v2/models/m/versions/" + std::string(20, '1') + "/infer").route,
            nullptr);
}

TEST(HttpRouterTest, MethodsHeadAndAllow) {
  std::string hit;
  HttpRouter r;
  r.Add("GET", "/metrics", HttpRouter::kQuick, Named(&hit, "metrics"));
  EXPECT_NE(r.Find("HEAD", "/metrics").route, nullptr);
  HttpRouter::Match post = r.Find("POST", "/metrics");
  EXPECT_EQ(post.route, nullptr);
  EXPECT_EQ(post.allow, "GET, HEAD");
  HttpRouter::Match none = r.Find("GET", "/nope");
  EXPECT_EQ(none.route, nullptr);
  EXPECT_THAT(none.allow, IsEmpty());
  EXPECT_EQ(r.Find("GET", std::string(5000, '/')).route, nullptr);
}

}  // namespace
}  // namespace modelserver

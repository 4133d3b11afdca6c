#include "common/params.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace lathe {
namespace {

TEST(ParamsTest, DefaultsWhenEmpty) {
  auto p = ParseTrainParams({});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->epochs, 3);
  EXPECT_EQ(p->batch_size, 32);
  EXPECT_DOUBLE_EQ(p->learning_rate, 1e-4);
  EXPECT_EQ(p->max_seq_length, 128);
}

TEST(ParamsTest, ParsesValues) {
  auto p = ParseTrainParams({{"epochs", "5"},
                             {"learning_rate", "0.001"},
                             {"seed", "-7"},
                             {"validation_split", "0.2"}});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->epochs, 5);
  EXPECT_DOUBLE_EQ(p->learning_rate, 0.001);
  EXPECT_EQ(p->seed, -7);
  EXPECT_DOUBLE_EQ(p->validation_split, 0.2);
}

TEST(ParamsTest, UnknownNameIsRejected) {
  auto p = ParseTrainParams({{"epocs", "5"}});
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(p.status().message()).find("params[epocs]"),
            std::string::npos);
}

TEST(ParamsTest, OutOfRangeAndMalformedAreRejected) {
  for (const auto& [name, value] :
       std::vector<std::pair<std::string, std::string>>{
           {"epochs", "0"},
           {"batch_size", "abc"},
           {"learning_rate", "0"},
           {"learning_rate", "nan"},
           {"max_seq_length", "513"},
           {"validation_split", "0.6"},
           {"warmup_ratio", "-0.1"}}) {
    auto p = ParseTrainParams({{name, value}});
    ASSERT_FALSE(p.ok()) << name << "=" << value;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(p.status().message()).find("params[" + name + "]"),
              std::string::npos)
        << p.status();
  }
}

TEST(ParamsTest, HelpNamesEveryParameter) {
  const std::string help = TrainParamsHelp();
  for (const char* name :
       {"epochs", "batch_size", "learning_rate", "num_threads"}) {
    EXPECT_NE(help.find(name), std::string::npos) << name;
  }
}

}  // namespace
}  // namespace lathe

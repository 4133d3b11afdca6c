#include "common/params.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
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
                             {"validation_split", "0.2"},
                             {"max_seq_length", "8192"},
                             {"gradient_checkpointing", "1"},
                             {"packing", "1"}});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->max_seq_length, 8192);
  EXPECT_EQ(p->gradient_checkpointing, 1);
  EXPECT_EQ(p->packing, 1);
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
           {"max_seq_length", "131073"},
           {"gradient_checkpointing", "2"},
           {"packing", "-1"},
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

TEST(ParamsTest, NamesListEveryParameterOnce) {
  const std::vector<std::string>& names = TrainParamNames();
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()).size(),
            names.size());
  for (const std::string& name : names) {
    // Every listed name parses (a value valid for each kind of field).
    bool parsed = false;
    for (const char* value : {"1", "16", "0.5", "full", "linear", "auto"}) {
      parsed = parsed || ParseTrainParams({{name, value}}).ok();
    }
    EXPECT_TRUE(parsed) << name;
  }
}

// Expects CheckParamsApply to refuse `params` for `task` naming `name`, with
// `why` in the message.
void ExpectRefused(const std::string& task,
                   const std::map<std::string, std::string>& params,
                   const std::string& name, const std::string& why) {
  const absl::Status s = CheckParamsApply(task, params);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << task << " " << s;
  EXPECT_NE(std::string(s.message()).find("params[" + name + "]: "),
            std::string::npos)
      << s;
  EXPECT_NE(std::string(s.message()).find(why), std::string::npos) << s;
}

TEST(ParamsApplyTest, LoraParamsNeedMethodLora) {
  for (const char* name : {"lora_r", "lora_alpha", "lora_dropout", "use_rslora",
                           "lora_target_modules", "merge_lora"}) {
    ExpectRefused("text-classification", {{name, "1"}}, name,
                  "applies only with method=lora or method=dpo-lora (this "
                  "job: method=full)");
    ExpectRefused("causal-lm", {{"method", "linear-probe"}, {name, "1"}}, name,
                  "applies only with method=lora or method=dpo-lora (this "
                  "job: method=linear-probe)");
    EXPECT_TRUE(
        CheckParamsApply("causal-lm", {{"method", "lora"}, {name, "1"}}).ok())
        << name;
  }
}

TEST(ParamsApplyTest, TaskParamsNeedTheirTask) {
  ExpectRefused("text-classification", {{"doc_stride", "32"}}, "doc_stride",
                "applies only to question-answering (this job: "
                "text-classification)");
  ExpectRefused("masked-lm", {{"max_new_tokens", "8"}}, "max_new_tokens",
                "applies only to causal-lm");
  ExpectRefused("causal-lm", {{"mlm_probability", "0.2"}}, "mlm_probability",
                "applies only to masked-lm");
  ExpectRefused("question-answering", {{"image_size", "32"}}, "image_size",
                "applies only to image-classification");
  ExpectRefused("text-regression", {{"tags_column", "t"}}, "tags_column",
                "applies only to token-classification");
  ExpectRefused("causal-lm", {{"text_pair_column", "b"}}, "text_pair_column",
                "applies only to text-classification and text-regression");
  ExpectRefused("image-classification", {{"max_seq_length", "64"}},
                "max_seq_length", "does not apply to image-classification");
  ExpectRefused("image-classification", {{"gradient_checkpointing", "1"}},
                "gradient_checkpointing",
                "does not apply to image-classification");
  ExpectRefused("text-classification", {{"packing", "1"}}, "packing",
                "applies only to causal-lm");
  ExpectRefused("question-answering", {{"text_column", "t"}}, "text_column",
                "does not apply to question-answering, "
                "image-classification and audio-classification");
  ExpectRefused("image-classification", {{"freeze_feature_encoder", "true"}},
                "freeze_feature_encoder",
                "applies only to audio-classification and "
                "speech-recognition");
  ExpectRefused("speech-recognition", {{"max_seq_length", "64"}},
                "max_seq_length", "does not apply to");
}

TEST(ParamsApplyTest, NamesTheFirstOffenderInNameOrder) {
  ExpectRefused("text-classification",
                {{"top_p", "0.9"}, {"lora_r", "4"}, {"doc_stride", "8"}},
                "doc_stride", "question-answering");
}

TEST(ParamsApplyTest, AcceptsParamsThatApply) {
  for (const auto& [task, params] :
       std::vector<std::pair<std::string, std::map<std::string, std::string>>>{
           // What the demo, the docs and the end-to-end tests submit.
           {"text-classification",
            {{"epochs", "2"},
             {"batch_size", "32"},
             {"learning_rate", "1e-3"},
             {"max_seq_length", "128"},
             {"warmup_ratio", "0.1"},
             {"eval_steps", "100"},
             {"save_steps", "100"},
             {"seed", "42"}}},
           {"text-classification",
            {{"text_column", "review"}, {"label_column", "sentiment"}}},
           {"text-classification",
            {{"method", "lora"},
             {"lora_r", "4"},
             {"lora_alpha", "8"},
             {"learning_rate", "5e-3"},
             {"merge_lora", "1"}}},
           {"question-answering",
            {{"max_seq_length", "128"}, {"doc_stride", "32"}}},
           {"causal-lm", {{"max_new_tokens", "8"}, {"group_by_length", "1"}}},
           {"masked-lm", {{"mlm_probability", "0.15"}}},
           {"token-classification", {{"max_seq_length", "64"}}},
           {"image-classification",
            {{"image_size", "32"},
             {"label_column", "y"},
             {"method", "linear-probe"}}},
           {"audio-classification",
            {{"freeze_feature_encoder", "false"},
             {"label_column", "y"},
             {"method", "lora"}}},
           {"speech-recognition",
            {{"freeze_feature_encoder", "auto"}, {"text_column", "sentence"}}},
           // An unknown task is the caller's to refuse.
           {"translation", {{"doc_stride", "8"}}},
       }) {
    const absl::Status s = CheckParamsApply(task, params);
    EXPECT_TRUE(s.ok()) << task << ": " << s;
  }
}

}  // namespace
}  // namespace lathe

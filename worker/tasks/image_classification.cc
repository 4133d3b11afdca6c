// image-classification: a picture to one of the labels seen in training;
// ViTForImageClassification and lathe-cnn heads. Pictures are decoded and
// resized once in Prepare and kept as uint8; batches scale them to [0, 1]
// and normalise with mean 0.5 and std 0.5 per channel (ViT's defaults,
// written to checkpoints by WriteImageProcessorConfig).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "worker/tasks/classification_metrics.h"
#include "worker/tasks/image_data.h"
#include "worker/tasks/task_factories.h"

namespace lathe {
namespace tasks {
namespace {

constexpr int64_t kDefaultImageSize = 32;

ImageReadOptions ReadOptionsFor(const TrainParams* params, int64_t size,
                                bool labels_optional) {
  ImageReadOptions o;
  if (params != nullptr && !params->image_column.empty()) {
    o.image_column = params->image_column;
  }
  if (params != nullptr && !params->label_column.empty()) {
    o.label_column = params->label_column;
  }
  o.image_size = size;
  o.labels_optional = labels_optional;
  return o;
}

// Pixels of `rows` (each size*size*3 uint8, HWC) as the normalised float
// batch [B, 3, size, size] the models take.
torch::Tensor PixelBatch(const std::vector<const std::vector<uint8_t>*>& rows,
                         int64_t size, const torch::Device& device) {
  const int64_t b = static_cast<int64_t>(rows.size());
  const size_t per = static_cast<size_t>(size * size * 3);
  torch::Tensor u8 = torch::empty({b, size, size, 3}, torch::kUInt8);
  uint8_t* dst = u8.data_ptr<uint8_t>();
  for (int64_t i = 0; i < b; ++i) {
    std::memcpy(dst + i * per, rows[i]->data(), per);
  }
  torch::Tensor x = u8.to(device).permute({0, 3, 1, 2}).to(torch::kFloat32);
  return (x / 255.0 - kImageMean) / kImageStd;
}

class ImageClassificationTask : public Task {
 public:
  std::string name() const override { return "image-classification"; }
  HeadKind head() const override { return HeadKind::kSequenceClassification; }

  absl::Status Prepare(const TaskData& data,
                       const TaskContext& context) override {
    const TrainParams* params = context.params;
    const ModelConfig* model = context.model_config;
    if (model != nullptr && model->architecture != Architecture::kVit &&
        model->architecture != Architecture::kCnn) {
      return absl::InvalidArgumentError(absl::StrCat(
          "image-classification needs an image model (vit or lathe-cnn), "
          "not ",
          model->model_type));
    }
    if (model != nullptr && model->num_channels != 3) {
      return absl::InvalidArgumentError(absl::StrCat(
          "image-classification feeds RGB pictures; the model expects ",
          model->num_channels, " channels"));
    }
    image_size_ = kDefaultImageSize;
    if (params != nullptr && params->image_size > 0) {
      image_size_ = params->image_size;
    } else if (model != nullptr && model->image_size > 0) {
      image_size_ = model->image_size;
    }
    if (model != nullptr && model->architecture == Architecture::kVit &&
        image_size_ != model->image_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("params[image_size]: the ViT model takes ",
                       model->image_size, "x", model->image_size,
                       " pictures (its position embeddings are fixed); "
                       "image_size=",
                       image_size_, " differs (leave it unset)"));
    }
    ASSIGN_OR_RETURN(
        std::vector<ImageExample> train,
        ReadImageExamples(data.train_path, data.train_name,
                          ReadOptionsFor(params, image_size_, false)));
    ASSIGN_OR_RETURN(labels_, ImageLabelSet(train, data.train_name));
    std::vector<ImageExample> val;
    if (!data.validation_path.empty()) {
      ASSIGN_OR_RETURN(
          val, ReadImageExamples(data.validation_path, data.validation_name,
                                 ReadOptionsFor(params, image_size_, false)));
      const std::set<std::string> known(labels_.begin(), labels_.end());
      std::set<std::string> unknown;
      for (const ImageExample& ex : val) {
        if (!known.count(ex.label)) unknown.insert(ex.label);
      }
      if (!unknown.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            data.validation_name, ": labels not in the training data: ",
            absl::StrJoin(unknown, ", ")));
      }
    } else if (params != nullptr && params->validation_split > 0) {
      auto [kept, held] =
          HoldOut(train.size(), params->validation_split, params->seed);
      std::vector<ImageExample> kept_rows;
      for (size_t i : kept) kept_rows.push_back(std::move(train[i]));
      for (size_t i : held) val.push_back(std::move(train[i]));
      train = std::move(kept_rows);
    }
    if (context.log) {
      if (labels_.size() < 2) {
        context.log(
            absl::StrCat("warning: the training data has a single label \"",
                         labels_[0], "\""));
      }
      context.log(absl::StrCat("data: ", train.size(), " training pictures, ",
                               val.size(), " validation pictures at ",
                               image_size_, "x", image_size_, ", labels [",
                               absl::StrJoin(labels_, ", "), "]"));
    }
    train_ = Featurize(std::move(train));
    val_ = Featurize(std::move(val));
    return absl::OkStatus();
  }

  void ConfigureModel(ModelConfig* config) const override {
    config->id2label = labels_;
    // The saved config then records the side the pictures were resized to,
    // which prediction reuses.
    config->image_size = image_size_;
  }

  int64_t train_size() const override { return train_.pixels.size(); }
  int64_t validation_size() const override { return val_.pixels.size(); }
  nlohmann::json Signature() const override {
    return {{"labels", labels_}, {"image_size", image_size_}};
  }

  TaskBatch TrainBatch(const std::vector<size_t>& indices,
                       const torch::Device& device,
                       torch::Generator* /*generator*/) const override {
    return Collate(train_, indices, device);
  }

  torch::Tensor Loss(const torch::Tensor& output,
                     const TaskBatch& batch) const override {
    return torch::nn::functional::cross_entropy(output,
                                                batch.targets.at("labels"));
  }

  absl::StatusOr<nlohmann::json> Evaluate(
      TaskModelImpl& model, int64_t batch_size,
      const torch::Device& device) const override {
    const size_t n = val_.pixels.size();
    const int64_t classes = static_cast<int64_t>(labels_.size());
    std::vector<int64_t> predicted;
    std::vector<float> scores;
    predicted.reserve(n);
    scores.reserve(n * classes);
    double loss_sum = 0;
    std::vector<size_t> indices;
    try {
      for (size_t begin = 0; begin < n;
           begin += static_cast<size_t>(batch_size)) {
        const size_t end = std::min(n, begin + static_cast<size_t>(batch_size));
        indices.clear();
        for (size_t i = begin; i < end; ++i) indices.push_back(i);
        TaskBatch b = Collate(val_, indices, device);
        torch::Tensor logits = model.forward(b.inputs);
        loss_sum +=
            torch::nn::functional::cross_entropy(
                logits, b.targets.at("labels"),
                torch::nn::functional::CrossEntropyFuncOptions().reduction(
                    torch::kSum))
                .item<double>();
        torch::Tensor cpu =
            logits.to(torch::kCPU, torch::kFloat32).contiguous();
        const float* s = cpu.data_ptr<float>();
        scores.insert(scores.end(), s, s + cpu.numel());
        torch::Tensor pred = cpu.argmax(-1).contiguous();
        const int64_t* p = pred.data_ptr<int64_t>();
        predicted.insert(predicted.end(), p, p + pred.numel());
      }
    } catch (const c10::Error& e) {
      return absl::InternalError(
          absl::StrCat("evaluating: ", e.what_without_backtrace()));
    }
    const ClassificationMetrics m =
        ComputeClassificationMetrics(predicted, val_.labels, classes);
    return nlohmann::json{
        {"accuracy", m.accuracy},
        {"top5_accuracy", TopKAccuracy(scores, val_.labels, classes,
                                       std::min<int64_t>(5, classes))},
        {"f1", m.f1},
        {"confusion_matrix", m.confusion},
        {"loss", n == 0 ? 0.0 : loss_sum / static_cast<double>(n)}};
  }

  std::string default_metric() const override { return "accuracy"; }

  absl::StatusOr<std::vector<nlohmann::json>> Predict(
      TaskModelImpl& model, const std::string& path,
      const std::string& display_name, const TaskContext& context,
      const torch::Device& device) const override {
    const ModelConfig& config = model.config();
    int64_t size =
        config.image_size > 0 ? config.image_size : kDefaultImageSize;
    if (config.architecture != Architecture::kVit &&
        context.params != nullptr && context.params->image_size > 0) {
      size = context.params->image_size;
    }
    ASSIGN_OR_RETURN(
        std::vector<ImageExample> rows,
        ReadImageExamples(path, display_name,
                          ReadOptionsFor(context.params, size,
                                         /*labels_optional=*/true)));
    const std::vector<std::string>& labels = config.id2label;
    std::vector<nlohmann::json> out;
    out.reserve(rows.size());
    try {
      for (const ImageExample& ex : rows) {
        ModelInputs in;
        in.pixel_values = PixelBatch({&ex.pixels}, size, device);
        torch::Tensor probs = torch::softmax(model.forward(in), -1)[0]
                                  .to(torch::kCPU, torch::kFloat32)
                                  .contiguous();
        out.push_back(DescribePrediction(
            "image", ex.image, probs.data_ptr<float>(), probs.numel(), labels));
      }
    } catch (const c10::Error& e) {
      return absl::InternalError(
          absl::StrCat("predicting: ", e.what_without_backtrace()));
    }
    return out;
  }

 private:
  struct Features {
    std::vector<std::vector<uint8_t>> pixels;
    std::vector<int64_t> labels;
  };

  Features Featurize(std::vector<ImageExample> rows) const {
    std::map<std::string, int64_t> index;
    for (size_t i = 0; i < labels_.size(); ++i) index[labels_[i]] = i;
    Features f;
    f.pixels.reserve(rows.size());
    f.labels.reserve(rows.size());
    for (ImageExample& ex : rows) {
      // Prepare checked that every label is a training label.
      f.labels.push_back(index.at(ex.label));
      f.pixels.push_back(std::move(ex.pixels));
    }
    return f;
  }

  TaskBatch Collate(const Features& f, const std::vector<size_t>& indices,
                    const torch::Device& device) const {
    std::vector<const std::vector<uint8_t>*> rows;
    std::vector<int64_t> labels;
    rows.reserve(indices.size());
    for (size_t i : indices) {
      rows.push_back(&f.pixels[i]);
      labels.push_back(f.labels[i]);
    }
    TaskBatch b;
    b.inputs.pixel_values = PixelBatch(rows, image_size_, device);
    b.targets["labels"] = torch::tensor(labels, torch::kLong).to(device);
    b.examples = static_cast<int64_t>(indices.size());
    return b;
  }

  int64_t image_size_ = kDefaultImageSize;
  std::vector<std::string> labels_;
  Features train_, val_;
};

}  // namespace

std::unique_ptr<Task> NewImageClassificationTask() {
  return std::make_unique<ImageClassificationTask>();
}

}  // namespace tasks
}  // namespace lathe

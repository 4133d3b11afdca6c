// A job's training and evaluation scalars as a TensorBoard event file, so
// that `tensorboard --logdir` reads a downloaded run. No LibTorch.
//
// The file is a sequence of records: an 8-byte little-endian length, the
// masked CRC-32C of those 8 bytes, the data, the masked CRC-32C of the data.
// Each record's data is a serialized tensorboard Event: the first carries
// the file version, the rest one scalar each (a Summary with one
// simple_value). The protobuf encoding is written by hand here, for the few
// fields used, rather than compiling TensorFlow's protos into Lathe.
#ifndef LATHE_WORKER_TRAIN_TENSORBOARD_H_
#define LATHE_WORKER_TRAIN_TENSORBOARD_H_

#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace lathe {

// Where a checkpoint keeps its copy of the run's event file.
inline constexpr char kTensorBoardDir[] = "runs";

// CRC-32C (Castagnoli), and the masked form the record format stores.
uint32_t Crc32c(const void* data, size_t n);
uint32_t MaskedCrc32c(const void* data, size_t n);

// One serialized Event record's framing around `data`.
std::string FrameRecord(const std::string& data);

class EventLog {
 public:
  // Starts OUT_DIR/runs/events.out.tfevents.SECONDS.lathe, or, when
  // `resume_dir` (a checkpoint directory) holds an event file, continues a
  // copy of it under the same name, so that a resumed run's log holds each
  // step once.
  static absl::StatusOr<EventLog> Open(const std::string& out_dir,
                                       const std::string& resume_dir);
  EventLog(EventLog&& other) noexcept;
  EventLog& operator=(EventLog&&) = delete;
  ~EventLog();

  // Appends one scalar. Flushed at once: a crash loses no written record.
  absl::Status AddScalar(const std::string& tag, int64_t step, double value);
  // The scalars of a worker event: a "train" event's loss, learning rate,
  // throughput and epoch as train/NAME, an "eval" event's metrics as
  // eval/NAME. Other events are ignored.
  absl::Status AddEvent(const nlohmann::json& event);
  // Copies the file as it is now into CHECKPOINT_DIR/runs/.
  absl::Status CopyInto(const std::string& checkpoint_dir) const;

  const std::string& path() const { return path_; }

 private:
  EventLog(std::string path, std::string name, FILE* file)
      : path_(std::move(path)), name_(std::move(name)), file_(file) {}
  absl::Status Append(const std::string& event);

  std::string path_;
  std::string name_;
  FILE* file_;
};

}  // namespace lathe

#endif  // LATHE_WORKER_TRAIN_TENSORBOARD_H_
